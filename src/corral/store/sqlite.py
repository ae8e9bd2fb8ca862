"""The embedded default store: one SQLite file in WAL mode, driven off the event loop.

Writes go through one writer thread that group-commits (`group_commit.py`); reads use a second
connection on a reader thread, which WAL lets proceed while the writer writes. Durability is a
setting: `synchronous=NORMAL` (the default) survives a crash of the process, `FULL` also a loss of
power, at the price of an fsync per commit.
"""

from __future__ import annotations

import asyncio
import dataclasses
import os
import sqlite3
import time
from collections.abc import Callable, Sequence
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any, Literal, TypeVar, cast
from urllib.parse import parse_qs, urlsplit

from corral.errors import (
    CorralError,
    LeaseLost,
    RunAlreadyFinished,
    RunNotFound,
    RunNotReconcilable,
    StoreError,
    StoreUnavailable,
)
from corral.store.group_commit import Batch, GroupCommitWriter
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
    run_from_row,
    step_from_row,
)
from corral.store.scripts import Result, ScriptFactory, Statement, drive_sync

T = TypeVar("T")
Synchronous = Literal["NORMAL", "FULL"]


def parse_sqlite_url(url: str) -> tuple[Path, Synchronous]:
    """`sqlite:///relative.db`, `sqlite:////absolute.db`, optional `?synchronous=FULL`."""
    parts = urlsplit(url)
    if parts.scheme != "sqlite":
        raise StoreError(f"not a SQLite URL: {url!r}", url=url)
    raw = parts.path[1:] if parts.path.startswith("/") else parts.path
    if not raw or raw == ":memory:":
        raise StoreError(
            f"{url!r} names no file; use sqlite:///path/to/corral.db (relative) "
            "or sqlite:////absolute/path.db",
            url=url,
        )
    query = parse_qs(parts.query)
    synchronous = query.get("synchronous", [os.environ.get("CORRAL_SQLITE_SYNCHRONOUS", "NORMAL")])
    level = synchronous[0].upper()
    if level not in ("NORMAL", "FULL"):
        raise StoreError(
            f"synchronous={level!r} in {url!r}: use NORMAL (survives process crashes) "
            "or FULL (also survives power loss)",
            url=url,
        )
    return Path(raw), cast(Synchronous, level)


class SQLiteStore:
    """The store protocol on one SQLite file."""

    dialect = "sqlite"

    def __init__(self, url: str, *, busy_timeout: float = 5.0, create: bool = True) -> None:
        """`create=False` refuses to create a missing database (for commands that only read)."""
        self.url = url
        self.path, self.synchronous = parse_sqlite_url(url)
        self._busy_timeout = busy_timeout
        self._create = create
        self._writer: GroupCommitWriter | None = None
        self._reader: ThreadPoolExecutor | None = None
        self._reader_conn: sqlite3.Connection | None = None

    # -- lifecycle -----------------------------------------------------------------------------

    async def open(self) -> None:
        if self._writer is not None:
            return
        if not self._create and not self.path.exists():
            raise StoreError(
                f"no Corral database at {self.path} (check --database-url / CORRAL_DATABASE_URL)",
                path=str(self.path),
            )
        try:
            self.path.parent.mkdir(parents=True, exist_ok=True)
        except OSError as exc:
            raise StoreError(
                f"cannot create the folder for {self.path}: {exc}", path=str(self.path)
            ) from None
        writer = GroupCommitWriter(self._connect_writer, translate=self._translate)
        await asyncio.get_running_loop().run_in_executor(None, writer.start)
        self._writer = writer
        self._reader = ThreadPoolExecutor(max_workers=1, thread_name_prefix="corral-reader")

    async def close(self) -> None:
        writer, self._writer = self._writer, None
        reader, self._reader = self._reader, None
        if writer is not None:
            await asyncio.get_running_loop().run_in_executor(None, writer.stop)
        if reader is not None:
            if self._reader_conn is not None:
                conn = self._reader_conn
                reader.submit(conn.close).result()
                self._reader_conn = None
            reader.shutdown(wait=True)

    def subscribe(self, callback: Callable[[], None]) -> None:
        """SQLite has no notifications: other processes' changes are found by polling."""

    @property
    def group_commit_stats(self) -> tuple[int, int]:
        """(batches, operations) committed so far: their ratio is the group-commit factor."""
        if self._writer is None:
            return (0, 0)
        return (self._writer.batches, self._writer.operations)

    def _connect(self) -> sqlite3.Connection:
        conn = sqlite3.connect(
            self.path, timeout=self._busy_timeout, isolation_level=None, check_same_thread=False
        )
        conn.execute(f"PRAGMA busy_timeout = {int(self._busy_timeout * 1000)}")
        conn.execute("PRAGMA journal_mode = WAL")
        conn.execute(f"PRAGMA synchronous = {self.synchronous}")
        return conn

    def _connect_writer(self) -> sqlite3.Connection:
        conn = self._connect()
        try:
            self._prepare_schema(conn)
        except BaseException:
            conn.close()
            raise
        return conn

    def _prepare_schema(self, conn: sqlite3.Connection) -> None:
        """Create an empty database's schema; refuse a database at another version."""
        if self._status(conn).up_to_date:
            return  # the common case needs no write lock: readers work beside a busy writer
        conn.execute("BEGIN IMMEDIATE")
        try:
            status = self._status(conn)
            if status.current is None:
                self._apply(conn, status.pending)
            refuse_unless_current(self._status(conn), str(self.path))
            conn.execute("COMMIT")
        except BaseException:
            conn.execute("ROLLBACK")
            raise

    def _status(self, conn: sqlite3.Connection) -> SchemaStatus:
        tables = {
            row[0] for row in conn.execute("SELECT name FROM sqlite_master WHERE type='table'")
        }
        if "corral_schema" not in tables:
            if tables - {"sqlite_sequence"}:
                raise StoreError(
                    f"{self.path} is a SQLite database but not a Corral one "
                    f"(it has tables {sorted(tables)[:5]}); point Corral at another file",
                    path=str(self.path),
                )
            return schema_status(None, "sqlite")
        row = conn.execute("SELECT max(version) FROM corral_schema").fetchone()
        return schema_status(int(row[0]) if row and row[0] is not None else None, "sqlite")

    def _apply(self, conn: sqlite3.Connection, migrations: Sequence[Migration]) -> None:
        conn.execute(SCHEMA_TABLE)
        for migration in migrations:
            for statement in migration.statements():
                conn.execute(statement)
            conn.execute(
                "INSERT INTO corral_schema (version, name, applied_at) VALUES (?, ?, ?)",
                (migration.version, migration.name, time.time()),
            )

    async def schema_status(self) -> SchemaStatus:
        """The database's schema version against this Corral's (works on any version)."""

        def read() -> SchemaStatus:
            if not self.path.exists():
                return schema_status(None, "sqlite")
            conn = self._connect()
            try:
                return self._status(conn)
            finally:
                conn.close()

        return await asyncio.get_running_loop().run_in_executor(None, self._guarded(read))

    async def migrate(self) -> list[Migration]:
        """Apply the pending migrations in one transaction; return them (none if up to date)."""

        def apply() -> list[Migration]:
            self.path.parent.mkdir(parents=True, exist_ok=True)
            conn = self._connect()
            try:
                conn.execute("BEGIN IMMEDIATE")
                try:
                    status = self._status(conn)
                    if status.current is not None and status.current > status.latest:
                        refuse_unless_current(status, str(self.path))
                    self._apply(conn, status.pending)
                    conn.execute("COMMIT")
                except BaseException:
                    conn.execute("ROLLBACK")
                    raise
                return list(status.pending)
            finally:
                conn.close()

        return await asyncio.get_running_loop().run_in_executor(None, self._guarded(apply))

    def _guarded(self, fn: Callable[[], T]) -> Callable[[], T]:
        def call() -> T:
            try:
                return fn()
            except Exception as exc:
                raise self._translate(exc) from exc

        return call

    def _translate(self, exc: Exception) -> Exception:
        if isinstance(exc, StoreError | LeaseLost | RunNotFound | RunAlreadyFinished):
            return exc
        text = str(exc)
        where = str(self.path)
        if isinstance(exc, sqlite3.OperationalError) and "locked" in text:
            return StoreUnavailable(
                f"{where} is locked by another process (waited {self._busy_timeout:g}s)",
                path=where,
            )
        if isinstance(exc, sqlite3.DatabaseError) and (
            "not a database" in text or "malformed" in text
        ):
            return StoreError(f"{where} is not a Corral database or is corrupt: {text}", path=where)
        if isinstance(exc, sqlite3.IntegrityError):
            # A constraint says no: trying again cannot help.
            return StoreError(f"{where}: {text}", path=where)
        if isinstance(exc, sqlite3.OperationalError) and "unable to open" in text:
            return StoreError(f"cannot open {where}: {text}", path=where)
        if isinstance(exc, sqlite3.Error):
            return StoreUnavailable(f"{where}: {type(exc).__name__}: {text}", path=where)
        return exc

    # -- plumbing ------------------------------------------------------------------------------

    def _submit(self, operation: Callable[[sqlite3.Connection, Batch], T]) -> asyncio.Future[T]:
        if self._writer is None:
            raise StoreError(f"the store at {self.path} is not open", path=str(self.path))
        return self._writer.submit(operation)

    async def _read(self, query: Callable[[sqlite3.Connection], T]) -> T:
        if self._reader is None:
            raise StoreError(f"the store at {self.path} is not open", path=str(self.path))

        def run() -> T:
            if self._reader_conn is None:
                self._reader_conn = self._connect()
            try:
                return query(self._reader_conn)
            except Exception as exc:
                raise self._translate(exc) from exc

        return await asyncio.get_running_loop().run_in_executor(self._reader, run)

    @staticmethod
    def _fence(conn: sqlite3.Connection, batch: Batch, run_id: str, epoch: int) -> None:
        """Refuse a write from a worker whose lease on `run_id` is not the current one."""
        if run_id in batch.epochs:
            current = batch.epochs[run_id]
        else:
            row = conn.execute(
                "SELECT lease_epoch FROM runs WHERE run_id = ? AND status = 'running'", (run_id,)
            ).fetchone()
            current = row[0] if row else None
            batch.epochs[run_id] = current
        if current != epoch:
            raise _lease_lost(run_id, epoch)

    # -- runs ----------------------------------------------------------------------------------

    # -- transaction scripts (the layers above keep their tables here) --------------------------

    async def run_script(self, factory: ScriptFactory[T]) -> T:
        def op(conn: sqlite3.Connection, batch: Batch) -> T:
            return self._guarded_script(conn, factory)

        return await self._submit(op)

    def _guarded_script(self, conn: sqlite3.Connection, factory: ScriptFactory[T]) -> T:
        """Run a script under a savepoint: if it raises, its writes are undone."""
        conn.execute("SAVEPOINT corral_script")
        try:
            value = drive_sync(_sqlite_executor(conn), factory("sqlite"))
        except BaseException as exc:
            conn.execute("ROLLBACK TO corral_script")
            conn.execute("RELEASE corral_script")
            if isinstance(exc, CorralError) or not isinstance(exc, Exception):
                raise
            raise self._translate(exc) from exc
        conn.execute("RELEASE corral_script")
        return value

    async def read_script(self, factory: ScriptFactory[T]) -> T:
        def query(conn: sqlite3.Connection) -> T:
            return drive_sync(_sqlite_executor(conn), factory("sqlite"))

        return await self._read(query)

    async def create_run(self, new: NewRun) -> tuple[RunRecord, bool]:
        def op(conn: sqlite3.Connection, batch: Batch) -> tuple[RunRecord, bool]:
            if new.idempotency_key is not None:
                existing = conn.execute(
                    f"SELECT {RUN_COLUMNS} FROM runs WHERE tenant = ? AND idempotency_key = ?",
                    (new.tenant, new.idempotency_key),
                ).fetchone()
                if existing is not None:
                    return run_from_row(existing), False
            _insert_run(conn, new)
            row = conn.execute(
                f"SELECT {RUN_COLUMNS} FROM runs WHERE run_id = ?", (new.run_id,)
            ).fetchone()
            return run_from_row(row), True

        return await self._submit(op)

    async def get_run(self, run_id: str) -> RunRecord | None:
        def query(conn: sqlite3.Connection) -> RunRecord | None:
            row = conn.execute(
                f"SELECT {RUN_COLUMNS} FROM runs WHERE run_id = ?", (run_id,)
            ).fetchone()
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
                clauses.append(f"{column} = ?")
                params.append(value)
        where = f"WHERE {' AND '.join(clauses)}" if clauses else ""
        sql = f"SELECT {RUN_COLUMNS} FROM runs {where} ORDER BY created_at DESC, run_id LIMIT ?"
        params.append(limit)
        return await self._read(lambda conn: [run_from_row(r) for r in conn.execute(sql, params)])

    async def load_journal(self, run_id: str) -> list[StepRecord]:
        sql = f"SELECT {STEP_COLUMNS} FROM steps WHERE run_id = ? ORDER BY seq"
        return await self._read(
            lambda conn: [step_from_row(r) for r in conn.execute(sql, (run_id,))]
        )

    async def list_signals(self, run_id: str) -> list[SignalRecord]:
        sql = (
            "SELECT signal_id, run_id, name, payload, created_at, consumed_seq FROM signals"
            " WHERE run_id = ? ORDER BY signal_id"
        )
        return await self._read(
            lambda conn: [SignalRecord(*row) for row in conn.execute(sql, (run_id,))]
        )

    async def count_runs(self) -> dict[RunStatus, int]:
        def query(conn: sqlite3.Connection) -> dict[RunStatus, int]:
            counts: dict[RunStatus, int] = dict.fromkeys(RUN_STATUSES, 0)
            for status, count in conn.execute("SELECT status, count(*) FROM runs GROUP BY status"):
                counts[status] = count
            return counts

        return await self._read(query)

    # -- workers -------------------------------------------------------------------------------

    async def claim_runs(
        self, *, worker_id: str, limit: int, now: float, lease_ttl: float
    ) -> list[RunRecord]:
        def op(conn: sqlite3.Connection, batch: Batch) -> list[RunRecord]:
            rows = conn.execute(
                f"""
                UPDATE runs
                SET status = 'running', lease_owner = :worker, lease_epoch = lease_epoch + 1,
                    lease_expires_at = :expires, claims = claims + 1, updated_at = :now,
                    wake_at = NULL
                WHERE run_id IN (
                    SELECT run_id FROM (
                        SELECT run_id FROM runs WHERE status = 'pending'
                            AND (wake_at IS NULL OR wake_at <= :now)
                            ORDER BY created_at LIMIT :limit)
                    UNION ALL SELECT run_id FROM (
                        SELECT run_id FROM runs WHERE status = 'waiting' AND wake_at <= :now
                            ORDER BY wake_at LIMIT :limit)
                    UNION ALL SELECT run_id FROM (
                        SELECT run_id FROM runs WHERE status = 'running'
                            AND lease_expires_at < :now
                            ORDER BY lease_expires_at LIMIT :limit)
                    LIMIT :limit)
                RETURNING {RUN_COLUMNS}
                """,
                {"worker": worker_id, "expires": now + lease_ttl, "now": now, "limit": limit},
            ).fetchall()
            for row in rows:
                batch.epochs.pop(row[0], None)
            return [run_from_row(r) for r in rows]

        return await self._submit(op)

    async def renew_leases(
        self, leases: Sequence[tuple[str, int]], *, now: float, lease_ttl: float
    ) -> list[str]:
        def op(conn: sqlite3.Connection, batch: Batch) -> list[str]:
            lost: list[str] = []
            for run_id, epoch in leases:
                cursor = conn.execute(
                    "UPDATE runs SET lease_expires_at = ? WHERE run_id = ? AND lease_epoch = ?"
                    " AND status = 'running'",
                    (now + lease_ttl, run_id, epoch),
                )
                if cursor.rowcount == 0:
                    lost.append(run_id)
            return lost

        return await self._submit(op)

    async def has_runnable(self, *, now: float) -> bool:
        sql = """
            SELECT EXISTS (SELECT 1 FROM runs WHERE status = 'pending'
                                AND (wake_at IS NULL OR wake_at <= :now))
                OR EXISTS (SELECT 1 FROM runs WHERE status = 'waiting' AND wake_at <= :now)
                OR EXISTS (SELECT 1 FROM runs WHERE status = 'running' AND lease_expires_at < :now)
        """
        return await self._read(lambda conn: bool(conn.execute(sql, {"now": now}).fetchone()[0]))

    async def next_wake_at(self) -> float | None:
        sql = """
            SELECT min(t) FROM (
                SELECT min(wake_at) AS t FROM runs WHERE status = 'waiting'
                UNION ALL SELECT min(wake_at) FROM runs WHERE status = 'pending'
                UNION ALL SELECT min(lease_expires_at) FROM runs WHERE status = 'running')
        """

        def query(conn: sqlite3.Connection) -> float | None:
            value = conn.execute(sql).fetchone()[0]
            return float(value) if value is not None else None

        return await self._read(query)

    # -- journal -------------------------------------------------------------------------------

    def submit_step(self, write: StepWrite) -> asyncio.Future[None]:
        if self._writer is None:
            raise StoreError(f"the store at {self.path} is not open", path=str(self.path))
        future: asyncio.Future[None] = self._writer.submit_bulk(_write_steps, write)
        return future

    async def write_step(self, write: StepWrite) -> None:
        await self.submit_step(write)

    async def start_child(self, write: StepWrite, child: NewRun) -> None:
        def op(conn: sqlite3.Connection, batch: Batch) -> None:
            self._fence(conn, batch, write.run_id, write.epoch)
            if conn.execute("SELECT 1 FROM runs WHERE run_id = ?", (child.run_id,)).fetchone():
                pass  # created by an earlier attempt of this very step
            else:
                _insert_run(conn, child)
            _write_step(conn, write)

        await self._submit(op)

    async def take_signal(self, write: StepWrite, *, signal_name: str) -> SignalRecord | None:
        def op(conn: sqlite3.Connection, batch: Batch) -> SignalRecord | None:
            self._fence(conn, batch, write.run_id, write.epoch)
            row = conn.execute(
                "SELECT signal_id, run_id, name, payload, created_at, consumed_seq FROM signals"
                " WHERE run_id = ? AND name = ? AND consumed_seq IS NULL"
                " ORDER BY signal_id LIMIT 1",
                (write.run_id, signal_name),
            ).fetchone()
            if row is None:
                return None
            signal = SignalRecord(*row)
            conn.execute(
                "UPDATE signals SET consumed_seq = ? WHERE signal_id = ?",
                (write.seq, signal.signal_id),
            )
            _write_step(conn, dataclasses.replace(write, result=signal.payload))
            return dataclasses.replace(signal, consumed_seq=write.seq)

        return await self._submit(op)

    async def suspend_run(
        self, run_id: str, epoch: int, *, wake_at: float | None, seen_wake_seq: int, now: float
    ) -> None:
        def op(conn: sqlite3.Connection, batch: Batch) -> None:
            self._fence(conn, batch, run_id, epoch)
            conn.execute(
                "UPDATE runs SET status = 'waiting', lease_owner = NULL, lease_expires_at = NULL,"
                " updated_at = :now,"
                " wake_at = CASE WHEN wake_seq != :seen THEN :now ELSE :wake_at END"
                " WHERE run_id = :run_id",
                {"now": now, "seen": seen_wake_seq, "wake_at": wake_at, "run_id": run_id},
            )
            batch.epochs.pop(run_id, None)

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
        def op(conn: sqlite3.Connection, batch: Batch) -> None:
            self._fence(conn, batch, run_id, epoch)
            row = conn.execute(
                "UPDATE runs SET status = ?, result = ?, error = ?, updated_at = ?,"
                " lease_owner = NULL, lease_expires_at = NULL, wake_at = NULL"
                " WHERE run_id = ? RETURNING parent_run_id",
                (status, result, error, now, run_id),
            ).fetchone()
            batch.epochs.pop(run_id, None)
            if row[0] is not None and status in FINISHED_STATUSES:
                _wake(conn, row[0], now)

        await self._submit(op)

    async def release_run(self, run_id: str, epoch: int, *, wake_at: float, now: float) -> None:
        def op(conn: sqlite3.Connection, batch: Batch) -> None:
            self._fence(conn, batch, run_id, epoch)
            conn.execute(
                "UPDATE runs SET status = 'pending', wake_at = ?, updated_at = ?,"
                " lease_owner = NULL, lease_expires_at = NULL WHERE run_id = ?",
                (wake_at, now, run_id),
            )
            batch.epochs.pop(run_id, None)

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
        def op(conn: sqlite3.Connection, batch: Batch) -> SignalRecord:
            row = conn.execute("SELECT status FROM runs WHERE run_id = ?", (run_id,)).fetchone()
            if row is None:
                raise RunNotFound(f"no run {run_id!r}", run_id=run_id)
            if row[0] in FINISHED_STATUSES:
                raise RunAlreadyFinished(
                    f"run {run_id} has already {row[0]}; signal {name!r} was not delivered",
                    run_id=run_id,
                    status=row[0],
                )
            if guard is not None:
                self._guarded_script(conn, guard)
            cursor = conn.execute(
                "INSERT INTO signals (run_id, name, payload, created_at) VALUES (?, ?, ?, ?)",
                (run_id, name, payload, now),
            )
            _wake(conn, run_id, now)
            assert cursor.lastrowid is not None
            return SignalRecord(cursor.lastrowid, run_id, name, payload, now, None)

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
        def op(conn: sqlite3.Connection, batch: Batch) -> StepRecord:
            row = conn.execute("SELECT status FROM runs WHERE run_id = ?", (run_id,)).fetchone()
            if row is None:
                raise RunNotFound(f"no run {run_id!r}", run_id=run_id)
            if row[0] != "needs_reconciliation":
                raise RunNotReconcilable(
                    f"run {run_id} has status {row[0]}; only a run in needs_reconciliation can be"
                    " reconciled",
                    run_id=run_id,
                    status=row[0],
                )
            step = conn.execute(
                f"SELECT {STEP_COLUMNS} FROM steps WHERE run_id = ? AND status = 'started'"
                " AND at_most_once = 1 ORDER BY seq LIMIT 1",
                (run_id,),
            ).fetchone()
            if step is None:
                raise RunNotReconcilable(
                    f"run {run_id} has no at-most-once step in flight", run_id=run_id
                )
            in_flight = step_from_row(step)
            if outcome == "retry":
                conn.execute(
                    "DELETE FROM steps WHERE run_id = ? AND seq = ?", (run_id, in_flight.seq)
                )
            else:
                conn.execute(
                    "UPDATE steps SET status = ?, result = ?, error = ?, finished_at = ?"
                    " WHERE run_id = ? AND seq = ?",
                    (outcome, result, error, now, run_id, in_flight.seq),
                )
            conn.execute(
                "UPDATE runs SET status = 'pending', error = NULL, wake_at = NULL,"
                " updated_at = ? WHERE run_id = ?",
                (now, run_id),
            )
            batch.epochs.pop(run_id, None)
            return in_flight

        return await self._submit(op)

    async def cancel_run(self, run_id: str, *, now: float) -> RunRecord:
        def op(conn: sqlite3.Connection, batch: Batch) -> RunRecord:
            row = conn.execute(
                f"SELECT {RUN_COLUMNS} FROM runs WHERE run_id = ?", (run_id,)
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
            cancelled = conn.execute(
                """
                WITH RECURSIVE tree(run_id) AS (
                    SELECT :run_id
                    UNION ALL SELECT runs.run_id FROM runs JOIN tree
                        ON runs.parent_run_id = tree.run_id)
                UPDATE runs SET status = 'cancelled', error = :error, updated_at = :now,
                    lease_epoch = lease_epoch + 1, lease_owner = NULL, lease_expires_at = NULL,
                    wake_at = NULL
                WHERE run_id IN (SELECT run_id FROM tree)
                    AND status NOT IN ('succeeded', 'failed', 'cancelled')
                RETURNING run_id
                """,
                {"run_id": run_id, "error": CANCELLED_ERROR, "now": now},
            ).fetchall()
            for (cancelled_id,) in cancelled:
                batch.epochs.pop(cancelled_id, None)
            if run.parent_run_id is not None:
                _wake(conn, run.parent_run_id, now)
            row = conn.execute(
                f"SELECT {RUN_COLUMNS} FROM runs WHERE run_id = ?", (run_id,)
            ).fetchone()
            return run_from_row(row)

        return await self._submit(op)


# -- rows ------------------------------------------------------------------------------------


def _sqlite_executor(conn: sqlite3.Connection) -> Callable[[Statement], Result]:
    def execute(statement: Statement) -> Result:
        if statement.many:
            cursor = conn.executemany(statement.sql, statement.params)
            return Result([], cursor.rowcount)
        cursor = conn.execute(statement.sql, tuple(statement.params))
        rows = cursor.fetchall()
        return Result(rows, cursor.rowcount)

    return execute


def _insert_run(conn: sqlite3.Connection, new: NewRun) -> None:
    conn.execute(INSERT_RUN, new_run_row(new))


def _write_step(conn: sqlite3.Connection, write: StepWrite) -> None:
    if is_intent(write):
        conn.execute(INSERT_INTENT, intent_row(write))
    else:
        conn.execute(UPSERT_OUTCOME, outcome_row(write))


def _write_steps(
    conn: sqlite3.Connection, batch: Batch, writes: list[StepWrite]
) -> list[LeaseLost | None]:
    """Journal many step writes: one lease query, then one statement per kind of write."""
    unknown = list({w.run_id for w in writes if w.run_id not in batch.epochs})
    for offset in range(0, len(unknown), 500):
        chunk = unknown[offset : offset + 500]
        found = dict(
            conn.execute(
                "SELECT run_id, lease_epoch FROM runs WHERE status = 'running'"
                f" AND run_id IN ({','.join('?' * len(chunk))})",
                chunk,
            ).fetchall()
        )
        for run_id in chunk:
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
    # An intent never overwrites an outcome (DO NOTHING), so the two statements commute.
    if intents:
        conn.executemany(INSERT_INTENT, intents)
    if finished:
        conn.executemany(UPSERT_OUTCOME, finished)
    for write, outcome in zip(writes, outcomes, strict=True):
        if outcome is None:
            for script in write.scripts:
                drive_sync(_sqlite_executor(conn), script("sqlite"))
    return outcomes


def _lease_lost(run_id: str, epoch: int) -> LeaseLost:
    return LeaseLost(
        f"run {run_id}: lease epoch {epoch} is no longer current", run_id=run_id, epoch=epoch
    )


def _wake(conn: sqlite3.Connection, run_id: str, now: float) -> None:
    """Record an event for `run_id`; a waiting run becomes runnable now."""
    conn.execute(
        "UPDATE runs SET wake_seq = wake_seq + 1,"
        " wake_at = CASE WHEN status = 'waiting' THEN ? ELSE wake_at END WHERE run_id = ?",
        (now, run_id),
    )
