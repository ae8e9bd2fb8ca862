"""The PostgreSQL store: any number of workers on any number of hosts share one database.

- Writes go through one writer task per process that group-commits on its own connection, as on
  SQLite. Reads use a pool.
- Runs are claimed with `SELECT … FOR UPDATE SKIP LOCKED` inside a materialised CTE (an
  optimisation fence), so a claim locks no more rows than its limit and never waits on another
  claimer.
- A journal write checks the lease epoch with `FOR SHARE`: a claim of the same run by another
  worker waits for (or skips) it, so a write never commits under a lease that was taken over.
- Runs made runnable are announced with `NOTIFY`; workers `LISTEN` and also poll, because a
  notification is not durable (one sent while a listener reconnects is lost).
- `?schema=NAME` in the URL keeps Corral's tables in their own schema (created if missing).
- Inside a tenant scope (`tenant_scope.py`) reads run in a transaction as the role the
  row-level security policies of migration 0012 bind, with the tenant set; writes are scoped per
  operation inside the writer's shared transaction (see `_apply_scoped`).
"""

from __future__ import annotations

import asyncio
import contextlib
import dataclasses
import logging
import time
from collections.abc import Awaitable, Callable, Sequence
from dataclasses import dataclass, field
from typing import Any, TypeVar
from urllib.parse import parse_qsl, urlencode, urlsplit, urlunsplit

import psycopg
from psycopg import AsyncConnection, pq, sql
from psycopg_pool import AsyncConnectionPool

from corral.errors import (
    CorralError,
    LeaseLost,
    RunAlreadyFinished,
    RunNotFound,
    RunNotReconcilable,
    StoreError,
    StoreUnavailable,
)
from corral.store.migrations import (
    SCHEMA_TABLE,
    Migration,
    SchemaStatus,
    refuse_unless_current,
    schema_status,
)
from corral.store.records import (
    FINISHED_STATUSES,
    RUN_STATUSES,
    NewRun,
    ReconcileOutcome,
    RunRecord,
    RunStatus,
    SignalRecord,
    StepRecord,
    StepWrite,
)
from corral.store.rows import (
    CANCELLED_ERROR,
    INSERT_INTENT,
    INSERT_RUN,
    RUN_COLUMNS,
    STEP_COLUMNS,
    UPSERT_OUTCOME,
    intent_row,
    is_intent,
    new_run_row,
    outcome_row,
    postgres_sql,
    run_from_row,
    step_from_row,
)
from corral.store.scripts import Result, ScriptFactory, Statement, drive_async
from corral.store.tenant_scope import RESTRICTED_ROLE, TENANT_SETTING, scoped_tenant

T = TypeVar("T")
log = logging.getLogger("corral.store")

Connection = AsyncConnection[Any]
MAX_BATCH = 512
_RUNS_RETURNING = ", ".join(f"runs.{c.strip()}" for c in RUN_COLUMNS.split(","))
DEADLOCK_RETRIES = 5
"""How often one operation is tried again after PostgreSQL chose it as a deadlock's victim."""

_INSERT_INTENT = postgres_sql(INSERT_INTENT)
_INSERT_RUN = postgres_sql(INSERT_RUN)
_UPSERT_OUTCOME = postgres_sql(UPSERT_OUTCOME)
_SIGNAL_COLUMNS = "signal_id, run_id, name, payload, created_at, consumed_seq"
# Each claim takes one kind of runnable run, oldest first, in a fenced CTE.
_CLAIM_KINDS = (
    "status = 'pending' AND (wake_at IS NULL OR wake_at <= %(now)s) ORDER BY created_at",
    "status = 'waiting' AND wake_at <= %(now)s ORDER BY wake_at",
    "status = 'running' AND lease_expires_at < %(now)s ORDER BY lease_expires_at",
)


@dataclass(slots=True)
class Batch:
    """State shared by the operations of one transaction."""

    epochs: dict[str, int | None] = field(default_factory=dict)
    notify: bool = False
    """Set by an operation that made a run runnable: the batch ends with one NOTIFY."""


Operation = Callable[[Connection, Batch], Awaitable[T]]
BulkApply = Callable[[Connection, Batch, list[Any]], Awaitable[list[Any]]]


@dataclass(slots=True)
class _Pending:
    operation: Operation[Any] | None
    future: asyncio.Future[Any]
    bulk: BulkApply | None = None
    item: Any = None
    tenant: str | None = None
    """The tenant scope the operation was submitted in (None: unscoped)."""


# A scoped transaction becomes the restricted role with the tenant set in the round trip that
# begins it: several statements, so the tenant goes in as a quoted literal (no parameters).
_BEGIN_SCOPE = sql.SQL("BEGIN; SET LOCAL ROLE {role}; SELECT set_config({setting}, {tenant}, true)")
_ENTER_SCOPE = sql.SQL(
    "SAVEPOINT corral_scope; SET LOCAL ROLE {role}; SELECT set_config({setting}, {tenant}, true)"
)
_LEAVE_SCOPE = sql.SQL(
    "SET LOCAL ROLE NONE; SELECT set_config({setting}, '', true); RELEASE SAVEPOINT corral_scope"
).format(setting=sql.Literal(TENANT_SETTING))
_UNDO_SCOPE = "ROLLBACK TO SAVEPOINT corral_scope; RELEASE SAVEPOINT corral_scope"
_INHERITS_RESTRICTED_ROLE = (
    "SELECT NOT u.rolsuper AND pg_has_role(u.oid, r.oid, 'USAGE')"
    " FROM pg_roles u, pg_roles r WHERE u.rolname = current_user AND r.rolname = %s"
)


def _scope_sql(template: sql.SQL, tenant: str) -> sql.Composed:
    return template.format(
        role=sql.Identifier(RESTRICTED_ROLE),
        setting=sql.Literal(TENANT_SETTING),
        tenant=sql.Literal(tenant),
    )


def parse_postgres_url(url: str) -> tuple[str, str]:
    """(libpq connection URL, schema) of `postgresql://…[?schema=NAME]`."""
    parts = urlsplit(url)
    if parts.scheme not in ("postgresql", "postgres"):
        raise StoreError(f"not a PostgreSQL URL: {url!r}", url=url)
    query = parse_qsl(parts.query, keep_blank_values=True)
    schema = "public"
    kept: list[tuple[str, str]] = []
    for key, value in query:
        if key == "schema":
            schema = value
        else:
            kept.append((key, value))
    if not schema.replace("_", "").isalnum():
        raise StoreError(f"schema {schema!r} in {url!r}: use letters, digits and _", url=url)
    return urlunsplit(parts._replace(query=urlencode(kept))), schema


def _safe(url: str) -> str:
    """The URL without its password, for messages."""
    parts = urlsplit(url)
    if parts.password:
        netloc = parts.netloc.replace(f":{parts.password}@", ":***@")
        return urlunsplit(parts._replace(netloc=netloc))
    return url


class PostgresStore:
    """The store protocol on PostgreSQL (psycopg 3, async)."""

    dialect = "postgresql"

    def __init__(
        self,
        url: str,
        *,
        pool_size: int = 8,
        connect_timeout: float = 5.0,
        create: bool = True,
    ) -> None:
        self.url = url
        self.conninfo, self.schema = parse_postgres_url(url)
        self._where = _safe(self.conninfo) + (
            f" (schema {self.schema})" if self.schema != "public" else ""
        )
        self._pool_size = pool_size
        self._connect_timeout = connect_timeout
        self._create = create
        self._pool: AsyncConnectionPool[Connection] | None = None
        self._queue: asyncio.Queue[_Pending | None] | None = None
        self._writer_task: asyncio.Task[None] | None = None
        self._writer_conn: Connection | None = None
        self._listener_task: asyncio.Task[None] | None = None
        self._subscribers: list[Callable[[], None]] = []
        self.channel = f"corral_runs_{self.schema}"
        self.batches = 0
        self.operations = 0

    # -- lifecycle -----------------------------------------------------------------------------

    async def open(self) -> None:
        if self._pool is not None:
            return
        await self._prepare_schema()
        pool: AsyncConnectionPool[Connection] = AsyncConnectionPool(
            self.conninfo,
            min_size=1,
            max_size=self._pool_size,
            open=False,
            kwargs={"autocommit": True, "connect_timeout": int(self._connect_timeout)},
            configure=self._configure,
            check=AsyncConnectionPool.check_connection,
            timeout=self._connect_timeout,
            reconnect_timeout=0,
            name="corral",
        )
        try:
            await pool.open(wait=True, timeout=self._connect_timeout)
        except Exception as exc:
            await pool.close()
            raise self._translate(exc) from exc
        self._pool = pool
        self._queue = asyncio.Queue()
        self._writer_task = asyncio.create_task(self._write_loop(), name="corral-pg-writer")
        if self._subscribers:
            self._start_listener()

    async def close(self) -> None:
        if self._writer_task is not None and self._queue is not None:
            self._queue.put_nowait(None)
            await asyncio.gather(self._writer_task, return_exceptions=True)
        self._writer_task = None
        if self._listener_task is not None:
            self._listener_task.cancel()
            await asyncio.gather(self._listener_task, return_exceptions=True)
            self._listener_task = None
        if self._writer_conn is not None:
            await self._writer_conn.close()
            self._writer_conn = None
        if self._pool is not None:
            await self._pool.close()
            self._pool = None

    def subscribe(self, callback: Callable[[], None]) -> None:
        """Call `callback` whenever another process may have made a run runnable."""
        self._subscribers.append(callback)
        if self._pool is not None and self._listener_task is None:
            self._start_listener()

    @property
    def group_commit_stats(self) -> tuple[int, int]:
        return (self.batches, self.operations)

    async def _configure(self, conn: Connection) -> None:
        await conn.execute(sql.SQL("SET search_path TO {}").format(sql.Identifier(self.schema)))

    async def _connect(self) -> Connection:
        try:
            conn = await AsyncConnection.connect(
                self.conninfo, autocommit=True, connect_timeout=int(self._connect_timeout)
            )
        except Exception as exc:
            raise self._translate(exc) from exc
        try:
            await self._configure(conn)
        except BaseException:  # including a cancel: never leave a connection open behind us
            await conn.close()
            raise
        return conn

    def _translate(self, exc: BaseException) -> Exception:
        if isinstance(exc, CorralError):
            return exc
        if isinstance(exc, psycopg.errors.IntegrityError):
            return StoreError(f"{self._where}: {exc}", url=self._where)
        if isinstance(exc, psycopg.errors.InsufficientPrivilege):
            # Refused, not unavailable: most often a scoped write that row-level security
            # stopped from landing in another tenant.
            return StoreError(f"{self._where}: refused: {exc}", url=self._where)
        if isinstance(exc, psycopg.OperationalError | psycopg.errors.AdminShutdown | OSError):
            first = str(exc).strip().splitlines()[0] if str(exc).strip() else type(exc).__name__
            return StoreUnavailable(
                f"PostgreSQL at {self._where} is unreachable: {first}", url=self._where
            )
        if isinstance(exc, psycopg.Error):
            return StoreUnavailable(f"{self._where}: {type(exc).__name__}: {exc}", url=self._where)
        if isinstance(exc, TimeoutError):
            return StoreUnavailable(
                f"PostgreSQL at {self._where} is unreachable: timed out", url=self._where
            )
        return exc if isinstance(exc, Exception) else RuntimeError(str(exc))

    # -- schema --------------------------------------------------------------------------------

    async def _status(self, conn: Connection) -> SchemaStatus:
        found = await (
            await conn.execute(
                "SELECT table_name FROM information_schema.tables WHERE table_schema = %s",
                (self.schema,),
            )
        ).fetchall()
        tables = {row[0] for row in found}
        if "corral_schema" not in tables:
            if {"runs", "steps"} & tables:
                raise StoreError(
                    f"{self._where} has tables named like Corral's but no corral_schema; "
                    "use another schema (?schema=NAME)",
                    url=self._where,
                )
            return schema_status(None, "postgresql")
        row = await (await conn.execute("SELECT max(version) FROM corral_schema")).fetchone()
        return schema_status(int(row[0]) if row and row[0] is not None else None, "postgresql")

    async def _apply(self, conn: Connection, migrations: Sequence[Migration]) -> None:
        await conn.execute(SCHEMA_TABLE)
        for migration in migrations:
            for statement in migration.statements():
                await conn.execute(statement)
            await conn.execute(
                "INSERT INTO corral_schema (version, name, applied_at) VALUES (%s, %s, %s)",
                (migration.version, migration.name, time.time()),
            )

    async def _locked_schema(self, conn: Connection) -> None:
        """Create the schema if missing and serialise schema changes between processes."""
        await conn.execute(
            sql.SQL("CREATE SCHEMA IF NOT EXISTS {}").format(sql.Identifier(self.schema))
        )
        await conn.execute("SELECT pg_advisory_xact_lock(hashtext(%s))", (self.channel,))

    async def _prepare_schema(self) -> None:
        conn = await self._connect()
        try:
            status = await self._status(conn)
            if not status.up_to_date:
                if status.current is None and not self._create:
                    raise StoreError(f"no Corral database at {self._where}", url=self._where)
                async with conn.transaction():
                    await self._locked_schema(conn)
                    status = await self._status(conn)
                    if status.current is None:
                        await self._apply(conn, status.pending)
                    refuse_unless_current(await self._status(conn), self._where)
            await self._refuse_inherited_scope(conn)
        except Exception as exc:
            raise self._translate(exc) from exc
        finally:
            await conn.close()

    async def _refuse_inherited_scope(self, conn: Connection) -> None:
        """Refuse a user who inherits the restricted role's privileges: its policies would bind
        every session of that user, with no tenant set, and workers would see no rows at all."""
        row = await (await conn.execute(_INHERITS_RESTRICTED_ROLE, (RESTRICTED_ROLE,))).fetchone()
        if row is not None and row[0]:
            raise StoreError(
                f"{self._where}: this user inherits the role {RESTRICTED_ROLE}, so row-level"
                " security would hide every row from its unscoped sessions; grant the role WITH"
                " INHERIT FALSE (PostgreSQL 16 and later) or make the user NOINHERIT (see"
                ' "Row-level security" in docs/operations.md)',
                url=self._where,
            )

    async def schema_status(self) -> SchemaStatus:
        conn = await self._connect()
        try:
            return await self._status(conn)
        except Exception as exc:
            raise self._translate(exc) from exc
        finally:
            await conn.close()

    async def migrate(self) -> list[Migration]:
        conn = await self._connect()
        try:
            async with conn.transaction():
                await self._locked_schema(conn)
                status = await self._status(conn)
                if status.current is not None and status.current > status.latest:
                    refuse_unless_current(status, self._where)
                await self._apply(conn, status.pending)
            return list(status.pending)
        except Exception as exc:
            raise self._translate(exc) from exc
        finally:
            await conn.close()

    # -- the writer ----------------------------------------------------------------------------

    def _submit(self, operation: Operation[T]) -> asyncio.Future[T]:
        if self._queue is None:
            raise StoreError(f"the store at {self._where} is not open", url=self._where)
        future: asyncio.Future[T] = asyncio.get_running_loop().create_future()
        self._queue.put_nowait(_Pending(operation, future, tenant=scoped_tenant()))
        return future

    def _submit_bulk(self, apply_many: BulkApply, item: Any) -> asyncio.Future[Any]:
        # Never scoped: bulk items (journal steps) come from workers holding a lease, fenced by
        # its epoch, and one statement writes the items of many runs and tenants at once.
        if self._queue is None:
            raise StoreError(f"the store at {self._where} is not open", url=self._where)
        future: asyncio.Future[Any] = asyncio.get_running_loop().create_future()
        self._queue.put_nowait(_Pending(None, future, apply_many, item))
        return future

    async def _write_loop(self) -> None:
        assert self._queue is not None
        queue = self._queue
        while True:
            first = await queue.get()
            if first is None:
                return
            batch = [first]
            stop = False
            while len(batch) < MAX_BATCH and not queue.empty():
                item = queue.get_nowait()
                if item is None:
                    stop = True
                    break
                batch.append(item)
            outcomes = await self._apply_batch(batch)
            if outcomes is None:  # isolate the operation that failed
                outcomes = []
                for item in batch:
                    single = await self._apply_batch([item])
                    outcomes.append(single[0] if single else StoreError("lost outcome"))
            self.batches += 1
            self.operations += len(batch)
            for item, outcome in zip(batch, outcomes, strict=True):
                if item.future.done():
                    continue
                if isinstance(outcome, BaseException):
                    item.future.set_exception(outcome)
                else:
                    item.future.set_result(outcome)
            if stop:
                return

    async def _apply_batch(self, batch: list[_Pending], attempt: int = 0) -> list[Any] | None:
        """Apply a batch in one transaction; None when an operation failed unexpectedly."""
        try:
            if self._writer_conn is None or self._writer_conn.closed:
                self._writer_conn = await self._connect()
            conn = self._writer_conn
        except Exception as exc:
            error = self._translate(exc)
            return [error for _ in batch]
        state = Batch()
        outcomes: list[Any] = []
        try:
            async with conn.transaction():
                index = 0
                while index < len(batch):
                    item = batch[index]
                    if item.bulk is not None:
                        end = index + 1
                        while end < len(batch) and batch[end].bulk is item.bulk:
                            end += 1
                        items = [b.item for b in batch[index:end]]
                        outcomes.extend(await item.bulk(conn, state, items))
                        index = end
                        continue
                    assert item.operation is not None
                    try:
                        if item.tenant is None:
                            outcomes.append(await item.operation(conn, state))
                        else:
                            outcomes.append(
                                await self._apply_scoped(conn, state, item.operation, item.tenant)
                            )
                    except CorralError as exc:
                        outcomes.append(exc)  # refusals write nothing before raising
                    index += 1
                if state.notify:
                    await conn.execute("SELECT pg_notify(%s, '')", (self.channel,))
        except (psycopg.errors.DeadlockDetected, psycopg.errors.SerializationFailure) as exc:
            # Another process's transaction locked rows in another order (transaction scripts
            # lock rows of their own: approvals, budget counters, the audit head). PostgreSQL
            # rolled this one back, so nothing was written and the connection is usable: apply
            # the operations one per transaction, where each script locks in one order.
            if len(batch) > 1:
                log.debug("batch of %d rolled back (%s); retrying one by one", len(batch), exc)
                return None
            if attempt < DEADLOCK_RETRIES:
                await asyncio.sleep(0.01 * (attempt + 1))
                return await self._apply_batch(batch, attempt=attempt + 1)
            return [self._translate(exc)]
        except (psycopg.OperationalError, OSError) as exc:
            # The connection is gone (a restart, a network cut): nothing was committed, or the
            # commit's fate is unknown. Callers see StoreUnavailable; the next batch reconnects.
            with contextlib.suppress(Exception):
                await conn.close()
            self._writer_conn = None
            error = self._translate(exc)
            return [error for _ in batch]
        except Exception as exc:
            if len(batch) == 1:
                return [self._translate(exc)]
            log.debug("batch of %d failed (%s); retrying one by one", len(batch), exc)
            return None
        return outcomes

    async def _apply_scoped(
        self, conn: Connection, batch: Batch, operation: Operation[T], tenant: str
    ) -> T:
        """Apply one operation of a shared batch in `tenant`'s scope, and only that operation.

        The batch's transaction also holds other tenants' writes and the engine's unscoped ones,
        so the scope cannot be the transaction's: the operation runs under a savepoint as the
        restricted role with the tenant set, both reset before the savepoint is released (and
        undone with it if the operation fails). A write that row-level security refuses fails
        this operation alone, like a refusal. The operation gets a lease-epoch cache of its own
        and the batch's is dropped after it: an answer read in the scope (another tenant's run
        looks absent) must not be reused unscoped, and a scoped cancel bumps epochs.
        """
        own = Batch()
        try:
            await self._begin_scope(conn, _ENTER_SCOPE, tenant)
            outcome = await operation(conn, own)
        except BaseException as exc:
            with contextlib.suppress(psycopg.Error):
                await conn.execute(_UNDO_SCOPE)
            if isinstance(exc, psycopg.errors.InsufficientPrivilege):
                raise self._translate(exc) from exc
            raise
        await conn.execute(_LEAVE_SCOPE)
        batch.epochs.clear()
        batch.notify = batch.notify or own.notify
        return outcome

    async def _begin_scope(self, conn: Connection, template: sql.SQL, tenant: str) -> None:
        """Become the restricted role with `tenant` set, until the transaction or savepoint
        that `template` begins ends."""
        try:
            await conn.execute(_scope_sql(template, tenant))
        except (psycopg.errors.InsufficientPrivilege, psycopg.errors.UndefinedObject) as exc:
            raise StoreError(
                f"{self._where}: a tenant scope needs to act as the role {RESTRICTED_ROLE}, and"
                f" this user cannot ({exc}); grant it: GRANT {RESTRICTED_ROLE} TO <user> (see"
                ' "Row-level security" in docs/operations.md)',
                url=self._where,
            ) from exc

    async def _read(self, query: Callable[[Connection], Awaitable[T]]) -> T:
        if self._pool is None:
            raise StoreError(f"the store at {self._where} is not open", url=self._where)
        tenant = scoped_tenant()
        try:
            async with self._pool.connection() as conn:
                if tenant is None:
                    return await query(conn)
                return await self._read_scoped(conn, tenant, query)
        except Exception as exc:
            raise self._translate(exc) from exc

    async def _read_scoped(
        self, conn: Connection, tenant: str, query: Callable[[Connection], Awaitable[T]]
    ) -> T:
        """`query` in a transaction of `tenant`'s scope, begun in one round trip."""
        try:
            await self._begin_scope(conn, _BEGIN_SCOPE, tenant)
            result = await query(conn)
        except BaseException:
            # A connection lost or cancelled mid-query is the pool's to discard or roll back.
            with contextlib.suppress(psycopg.Error):
                await conn.execute("ROLLBACK")
            raise
        await conn.execute("COMMIT")
        return result

    async def _fence(self, conn: Connection, batch: Batch, run_id: str, epoch: int) -> None:
        if run_id not in batch.epochs:
            row = await (
                await conn.execute(
                    "SELECT lease_epoch FROM runs WHERE run_id = %s AND status = 'running'"
                    " FOR SHARE",
                    (run_id,),
                )
            ).fetchone()
            batch.epochs[run_id] = row[0] if row else None
        if batch.epochs[run_id] != epoch:
            raise _lease_lost(run_id, epoch)

    # -- wake-ups ------------------------------------------------------------------------------

    def _start_listener(self) -> None:
        self._listener_task = asyncio.create_task(self._listen(), name="corral-pg-listener")

    async def _listen(self) -> None:
        delay = 0.2
        while True:
            try:
                conn = await self._connect()
                try:
                    await conn.execute(sql.SQL("LISTEN {}").format(sql.Identifier(self.channel)))
                    delay = 0.2
                    self._notify_subscribers()  # whatever was sent while we were away
                    async for _ in conn.notifies():
                        self._notify_subscribers()
                finally:
                    await conn.close()
            except asyncio.CancelledError:
                raise
            except Exception as exc:
                log.info("LISTEN on %s interrupted (%s); reconnecting", self._where, exc)
                await asyncio.sleep(delay)
                delay = min(delay * 2, 5.0)

    def _notify_subscribers(self) -> None:
        for callback in self._subscribers:
            callback()

    # -- runs ----------------------------------------------------------------------------------

    # -- transaction scripts (the layers above keep their tables here) --------------------------

    async def run_script(self, factory: ScriptFactory[T]) -> T:
        async def op(conn: Connection, batch: Batch) -> T:
            return await self._guarded_script(conn, factory)

        return await self._submit(op)

    async def _guarded_script(self, conn: Connection, factory: ScriptFactory[T]) -> T:
        """Run a script under a savepoint: if it raises, its writes are undone."""
        try:
            async with conn.transaction():  # a savepoint inside the batch's transaction
                return await drive_async(_pg_executor(conn), factory("postgresql"))
        except CorralError:
            raise
        except (psycopg.OperationalError, OSError):
            raise  # the connection is gone: the whole batch is retried or reported
        except Exception as exc:
            raise self._translate(exc) from exc

    async def read_script(self, factory: ScriptFactory[T]) -> T:
        async def query(conn: Connection) -> T:
            if conn.info.transaction_status != pq.TransactionStatus.IDLE:
                # A scope's transaction already holds it: no savepoint needed.
                return await drive_async(_pg_executor(conn), factory("postgresql"))
            async with conn.transaction():
                return await drive_async(_pg_executor(conn), factory("postgresql"))

        return await self._read(query)

    async def create_run(self, new: NewRun) -> tuple[RunRecord, bool]:
        async def op(conn: Connection, batch: Batch) -> tuple[RunRecord, bool]:
            row = await (
                await conn.execute(
                    _INSERT_RUN
                    + " ON CONFLICT (tenant, idempotency_key) WHERE idempotency_key IS NOT NULL"
                    f" DO NOTHING RETURNING {RUN_COLUMNS}",
                    new_run_row(new),
                )
            ).fetchone()
            if row is not None:
                batch.notify = True
                return run_from_row(row), True
            existing = await (
                await conn.execute(
                    f"SELECT {RUN_COLUMNS} FROM runs WHERE tenant = %s AND idempotency_key = %s",
                    (new.tenant, new.idempotency_key),
                )
            ).fetchone()
            assert existing is not None
            return run_from_row(existing), False

        return await self._submit(op)

    async def get_run(self, run_id: str) -> RunRecord | None:
        async def query(conn: Connection) -> RunRecord | None:
            cur = await conn.execute(f"SELECT {RUN_COLUMNS} FROM runs WHERE run_id = %s", (run_id,))
            row = await cur.fetchone()
            return run_from_row(row) if row else None

        return await self._read(query)

    async def list_runs(
        self,
        *,
        status: RunStatus | None = None,
        workflow: str | None = None,
        parent_run_id: str | None = None,
        limit: int = 100,
        tenant: str | None = None,
    ) -> list[RunRecord]:
        clauses: list[str] = []
        params: list[Any] = []
        for column, value in (
            ("status", status),
            ("workflow", workflow),
            ("parent_run_id", parent_run_id),
            ("tenant", tenant),
        ):
            if value is not None:
                clauses.append(f"{column} = %s")
                params.append(value)
        where = f"WHERE {' AND '.join(clauses)}" if clauses else ""
        statement = (
            f"SELECT {RUN_COLUMNS} FROM runs {where} ORDER BY created_at DESC, run_id LIMIT %s"
        )
        params.append(limit)

        async def query(conn: Connection) -> list[RunRecord]:
            cur = await conn.execute(statement, params)
            return [run_from_row(r) for r in await cur.fetchall()]

        return await self._read(query)

    async def load_journal(self, run_id: str) -> list[StepRecord]:
        async def query(conn: Connection) -> list[StepRecord]:
            cur = await conn.execute(
                f"SELECT {STEP_COLUMNS} FROM steps WHERE run_id = %s ORDER BY seq", (run_id,)
            )
            return [step_from_row(r) for r in await cur.fetchall()]

        return await self._read(query)

    async def list_signals(self, run_id: str) -> list[SignalRecord]:
        async def query(conn: Connection) -> list[SignalRecord]:
            cur = await conn.execute(
                f"SELECT {_SIGNAL_COLUMNS} FROM signals WHERE run_id = %s ORDER BY signal_id",
                (run_id,),
            )
            return [SignalRecord(*row) for row in await cur.fetchall()]

        return await self._read(query)

    async def count_runs(self) -> dict[RunStatus, int]:
        async def query(conn: Connection) -> dict[RunStatus, int]:
            counts: dict[RunStatus, int] = dict.fromkeys(RUN_STATUSES, 0)
            cur = await conn.execute("SELECT status, count(*) FROM runs GROUP BY status")
            for status, count in await cur.fetchall():
                counts[status] = count
            return counts

        return await self._read(query)

    # -- workers -------------------------------------------------------------------------------

    async def claim_runs(
        self, *, worker_id: str, limit: int, now: float, lease_ttl: float
    ) -> list[RunRecord]:
        async def op(conn: Connection, batch: Batch) -> list[RunRecord]:
            claimed: list[RunRecord] = []
            for kind in _CLAIM_KINDS:
                wanted = limit - len(claimed)
                if wanted <= 0:
                    break
                cur = await conn.execute(
                    "WITH picked AS MATERIALIZED ("
                    f" SELECT run_id FROM runs WHERE {kind} LIMIT %(limit)s"
                    " FOR UPDATE SKIP LOCKED)"
                    " UPDATE runs SET status = 'running', lease_owner = %(worker)s,"
                    " lease_epoch = runs.lease_epoch + 1, lease_expires_at = %(expires)s,"
                    " claims = runs.claims + 1, updated_at = %(now)s, wake_at = NULL"
                    f" FROM picked WHERE runs.run_id = picked.run_id RETURNING {_RUNS_RETURNING}",
                    {"worker": worker_id, "expires": now + lease_ttl, "now": now, "limit": wanted},
                )
                for row in await cur.fetchall():
                    run = run_from_row(row)
                    batch.epochs.pop(run.run_id, None)
                    claimed.append(run)
            return claimed

        return await self._submit(op)

    async def renew_leases(
        self, leases: Sequence[tuple[str, int]], *, now: float, lease_ttl: float
    ) -> list[str]:
        async def op(conn: Connection, batch: Batch) -> list[str]:
            if not leases:
                return []
            cur = await conn.execute(
                "UPDATE runs SET lease_expires_at = %s FROM unnest(%s::text[], %s::bigint[])"
                " AS held(run_id, epoch) WHERE runs.run_id = held.run_id"
                " AND runs.lease_epoch = held.epoch AND runs.status = 'running'"
                " RETURNING runs.run_id",
                (now + lease_ttl, [r for r, _ in leases], [e for _, e in leases]),
            )
            renewed = {row[0] for row in await cur.fetchall()}
            return [run_id for run_id, _ in leases if run_id not in renewed]

        return await self._submit(op)

    async def has_runnable(self, *, now: float) -> bool:
        async def query(conn: Connection) -> bool:
            cur = await conn.execute(
                "SELECT EXISTS (SELECT 1 FROM runs WHERE status = 'pending'"
                " AND (wake_at IS NULL OR wake_at <= %(now)s))"
                " OR EXISTS (SELECT 1 FROM runs WHERE status = 'waiting' AND wake_at <= %(now)s)"
                " OR EXISTS (SELECT 1 FROM runs WHERE status = 'running'"
                " AND lease_expires_at < %(now)s)",
                {"now": now},
            )
            row = await cur.fetchone()
            return bool(row and row[0])

        return await self._read(query)

    async def next_wake_at(self) -> float | None:
        async def query(conn: Connection) -> float | None:
            cur = await conn.execute(
                "SELECT min(t) FROM ("
                " SELECT min(wake_at) AS t FROM runs WHERE status = 'waiting'"
                " UNION ALL SELECT min(wake_at) FROM runs WHERE status = 'pending'"
                " UNION ALL SELECT min(lease_expires_at) FROM runs WHERE status = 'running') AS m"
            )
            row = await cur.fetchone()
            return float(row[0]) if row and row[0] is not None else None

        return await self._read(query)

    # -- journal -------------------------------------------------------------------------------

    def submit_step(self, write: StepWrite) -> asyncio.Future[None]:
        future: asyncio.Future[None] = self._submit_bulk(_write_steps, write)
        return future

    async def write_step(self, write: StepWrite) -> None:
        await self.submit_step(write)

    async def start_child(self, write: StepWrite, child: NewRun) -> None:
        async def op(conn: Connection, batch: Batch) -> None:
            await self._fence(conn, batch, write.run_id, write.epoch)
            await conn.execute(
                _INSERT_RUN + " ON CONFLICT (run_id) DO NOTHING",
                new_run_row(child),
            )
            await conn.execute(_UPSERT_OUTCOME, outcome_row(write))
            batch.notify = True

        await self._submit(op)

    async def take_signal(self, write: StepWrite, *, signal_name: str) -> SignalRecord | None:
        async def op(conn: Connection, batch: Batch) -> SignalRecord | None:
            await self._fence(conn, batch, write.run_id, write.epoch)
            row = await (
                await conn.execute(
                    f"SELECT {_SIGNAL_COLUMNS} FROM signals WHERE run_id = %s AND name = %s"
                    " AND consumed_seq IS NULL ORDER BY signal_id LIMIT 1 FOR UPDATE",
                    (write.run_id, signal_name),
                )
            ).fetchone()
            if row is None:
                return None
            signal = SignalRecord(*row)
            await conn.execute(
                "UPDATE signals SET consumed_seq = %s WHERE signal_id = %s",
                (write.seq, signal.signal_id),
            )
            taken = dataclasses.replace(write, result=signal.payload)
            await conn.execute(_UPSERT_OUTCOME, outcome_row(taken))
            return dataclasses.replace(signal, consumed_seq=write.seq)

        return await self._submit(op)

    async def _update_held(
        self,
        conn: Connection,
        batch: Batch,
        run_id: str,
        epoch: int,
        assignments: str,
        params: dict[str, Any],
    ) -> tuple[Any, ...]:
        """Update a run this worker holds (status running at `epoch`), or raise LeaseLost."""
        cur = await conn.execute(
            f"UPDATE runs SET {assignments} WHERE run_id = %(run_id)s"
            " AND lease_epoch = %(epoch)s AND status = 'running'"
            " RETURNING parent_run_id, wake_seq, wake_at",
            {**params, "run_id": run_id, "epoch": epoch},
        )
        row = await cur.fetchone()
        batch.epochs.pop(run_id, None)
        if row is None:
            raise _lease_lost(run_id, epoch)
        return tuple(row)

    async def suspend_run(
        self, run_id: str, epoch: int, *, wake_at: float | None, seen_wake_seq: int, now: float
    ) -> None:
        async def op(conn: Connection, batch: Batch) -> None:
            _, wake_seq, _ = await self._update_held(
                conn,
                batch,
                run_id,
                epoch,
                "status = 'waiting', lease_owner = NULL, lease_expires_at = NULL,"
                " updated_at = %(now)s,"
                " wake_at = CASE WHEN wake_seq != %(seen)s THEN %(now)s ELSE %(wake_at)s END",
                {"now": now, "seen": seen_wake_seq, "wake_at": wake_at},
            )
            if wake_seq != seen_wake_seq:
                batch.notify = True

        await self._submit(op)

    async def finish_run(
        self,
        run_id: str,
        epoch: int,
        *,
        status: RunStatus,
        result: str | None,
        error: str | None,
        now: float,
    ) -> None:
        async def op(conn: Connection, batch: Batch) -> None:
            parent, _, _ = await self._update_held(
                conn,
                batch,
                run_id,
                epoch,
                "status = %(status)s, result = %(result)s, error = %(error)s,"
                " updated_at = %(now)s, lease_owner = NULL, lease_expires_at = NULL,"
                " wake_at = NULL",
                {"status": status, "result": result, "error": error, "now": now},
            )
            if parent is not None and status in FINISHED_STATUSES:
                await _wake(conn, batch, parent, now)

        await self._submit(op)

    async def release_run(self, run_id: str, epoch: int, *, wake_at: float, now: float) -> None:
        async def op(conn: Connection, batch: Batch) -> None:
            await self._update_held(
                conn,
                batch,
                run_id,
                epoch,
                "status = 'pending', wake_at = %(wake_at)s, updated_at = %(now)s,"
                " lease_owner = NULL, lease_expires_at = NULL",
                {"wake_at": wake_at, "now": now},
            )
            batch.notify = True

        await self._submit(op)

    # -- from outside a run --------------------------------------------------------------------

    async def send_signal(
        self,
        run_id: str,
        name: str,
        payload: str,
        *,
        now: float,
        guard: ScriptFactory[Any] | None = None,
    ) -> SignalRecord:
        async def op(conn: Connection, batch: Batch) -> SignalRecord:
            status = await _lock_status(conn, run_id)
            if status in FINISHED_STATUSES:
                raise RunAlreadyFinished(
                    f"run {run_id} has already {status}; signal {name!r} was not delivered",
                    run_id=run_id,
                    status=status,
                )
            if guard is not None:
                await self._guarded_script(conn, guard)
            inserted = await (
                await conn.execute(
                    "INSERT INTO signals (run_id, name, payload, created_at)"
                    " VALUES (%s, %s, %s, %s) RETURNING signal_id",
                    (run_id, name, payload, now),
                )
            ).fetchone()
            assert inserted is not None
            await _wake(conn, batch, run_id, now)
            return SignalRecord(inserted[0], run_id, name, payload, now, None)

        return await self._submit(op)

    async def reconcile_run(
        self,
        run_id: str,
        *,
        outcome: ReconcileOutcome,
        result: str | None,
        error: str | None,
        now: float,
    ) -> StepRecord:
        async def op(conn: Connection, batch: Batch) -> StepRecord:
            status = await _lock_status(conn, run_id)
            if status != "needs_reconciliation":
                raise RunNotReconcilable(
                    f"run {run_id} has status {status}; only a run in needs_reconciliation can"
                    " be reconciled",
                    run_id=run_id,
                    status=status,
                )
            step = await (
                await conn.execute(
                    f"SELECT {STEP_COLUMNS} FROM steps WHERE run_id = %s AND status = 'started'"
                    " AND at_most_once = 1 ORDER BY seq LIMIT 1",
                    (run_id,),
                )
            ).fetchone()
            if step is None:
                raise RunNotReconcilable(
                    f"run {run_id} has no at-most-once step in flight", run_id=run_id
                )
            in_flight = step_from_row(step)
            if outcome == "retry":
                await conn.execute(
                    "DELETE FROM steps WHERE run_id = %s AND seq = %s", (run_id, in_flight.seq)
                )
            else:
                await conn.execute(
                    "UPDATE steps SET status = %s, result = %s, error = %s, finished_at = %s"
                    " WHERE run_id = %s AND seq = %s",
                    (outcome, result, error, now, run_id, in_flight.seq),
                )
            await conn.execute(
                "UPDATE runs SET status = 'pending', error = NULL, wake_at = NULL,"
                " updated_at = %s WHERE run_id = %s",
                (now, run_id),
            )
            batch.epochs.pop(run_id, None)
            batch.notify = True
            return in_flight

        return await self._submit(op)

    async def cancel_run(self, run_id: str, *, now: float) -> RunRecord:
        async def op(conn: Connection, batch: Batch) -> RunRecord:
            row = await (
                await conn.execute(
                    f"SELECT {RUN_COLUMNS} FROM runs WHERE run_id = %s FOR UPDATE", (run_id,)
                )
            ).fetchone()
            if row is None:
                raise RunNotFound(f"no run {run_id!r}", run_id=run_id)
            run = run_from_row(row)
            if run.finished:
                raise RunAlreadyFinished(
                    f"run {run_id} has already {run.status}; nothing to cancel",
                    run_id=run_id,
                    status=run.status,
                )
            cur = await conn.execute(
                "WITH RECURSIVE tree(run_id) AS ("
                " SELECT %(run_id)s::text"
                " UNION ALL SELECT runs.run_id FROM runs JOIN tree"
                " ON runs.parent_run_id = tree.run_id)"
                " UPDATE runs SET status = 'cancelled', error = %(error)s, updated_at = %(now)s,"
                " lease_epoch = lease_epoch + 1, lease_owner = NULL, lease_expires_at = NULL,"
                " wake_at = NULL"
                " WHERE run_id IN (SELECT run_id FROM tree)"
                " AND status NOT IN ('succeeded', 'failed', 'cancelled')"
                " RETURNING run_id",
                {"run_id": run_id, "error": CANCELLED_ERROR, "now": now},
            )
            for (cancelled_id,) in await cur.fetchall():
                batch.epochs.pop(cancelled_id, None)
            if run.parent_run_id is not None:
                await _wake(conn, batch, run.parent_run_id, now)
            final = await (
                await conn.execute(f"SELECT {RUN_COLUMNS} FROM runs WHERE run_id = %s", (run_id,))
            ).fetchone()
            assert final is not None
            return run_from_row(final)

        return await self._submit(op)


# -- statements --------------------------------------------------------------------------------


async def _write_steps(
    conn: Connection, batch: Batch, writes: list[StepWrite]
) -> list[LeaseLost | None]:
    """Journal many step writes: one fencing query (FOR SHARE), then one statement per kind."""
    unknown = list({w.run_id for w in writes if w.run_id not in batch.epochs})
    if unknown:
        cur = await conn.execute(
            "SELECT run_id, lease_epoch FROM runs WHERE run_id = ANY(%s) AND status = 'running'"
            " FOR SHARE",
            (unknown,),
        )
        found = {run_id: epoch for run_id, epoch in await cur.fetchall()}
        for run_id in unknown:
            batch.epochs[run_id] = found.get(run_id)
    outcomes: list[LeaseLost | None] = []
    intents: list[tuple[Any, ...]] = []
    finished: list[tuple[Any, ...]] = []
    for write in writes:
        if batch.epochs[write.run_id] != write.epoch:
            outcomes.append(_lease_lost(write.run_id, write.epoch))
            continue
        outcomes.append(None)
        if is_intent(write):
            intents.append(intent_row(write))
        else:
            finished.append(outcome_row(write))
    async with conn.cursor() as cursor:
        if intents:
            await cursor.executemany(_INSERT_INTENT, intents)
        if finished:
            await cursor.executemany(_UPSERT_OUTCOME, finished)
    for write, outcome in zip(writes, outcomes, strict=True):
        if outcome is None:
            for script in write.scripts:
                await drive_async(_pg_executor(conn), script("postgresql"))
    return outcomes


def _pg_executor(conn: Connection) -> Callable[[Statement], Awaitable[Result]]:
    async def execute(statement: Statement) -> Result:
        query = postgres_sql(statement.sql)
        async with conn.cursor() as cursor:
            if statement.many:
                await cursor.executemany(query, statement.params)
                return Result([], cursor.rowcount)
            await cursor.execute(query, tuple(statement.params))
            rows = await cursor.fetchall() if cursor.description is not None else []
            return Result(rows, cursor.rowcount)

    return execute


async def _lock_status(conn: Connection, run_id: str) -> RunStatus:
    """Lock a run's row for this transaction and return its status; RunNotFound if none."""
    row = await (
        await conn.execute("SELECT status FROM runs WHERE run_id = %s FOR UPDATE", (run_id,))
    ).fetchone()
    if row is None:
        raise RunNotFound(f"no run {run_id!r}", run_id=run_id)
    status: RunStatus = row[0]
    return status


async def _wake(conn: Connection, batch: Batch, run_id: str, now: float) -> None:
    """Record an event for `run_id`; a waiting run becomes runnable now."""
    await conn.execute(
        "UPDATE runs SET wake_seq = wake_seq + 1,"
        " wake_at = CASE WHEN status = 'waiting' THEN %s ELSE wake_at END WHERE run_id = %s",
        (now, run_id),
    )
    batch.notify = True


def _lease_lost(run_id: str, epoch: int) -> LeaseLost:
    return LeaseLost(
        f"run {run_id}: lease epoch {epoch} is no longer current", run_id=run_id, epoch=epoch
    )
