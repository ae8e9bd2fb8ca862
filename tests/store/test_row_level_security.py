"""Row-level security behind the tenant filter (PostgreSQL, migration 0012).

Inside `tenant_scope(tenant)` the store's transactions run as the role the policies bind, so a
query that forgot its `WHERE tenant = …` sees and changes one tenant's rows only; outside a
scope every row is there, as workers need. Proven with unfiltered SQL through the store's own
script API, as the superuser the suites connect as (RLS applies to the role, not the login) and
as an ordinary login user set up the way docs/operations.md tells an operator to.
"""

from __future__ import annotations

import asyncio
import os
import uuid
from collections.abc import AsyncIterator, Iterator
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit, urlunsplit

import psycopg
import pytest
from psycopg import sql

from corral.errors import RunNotFound, StoreError
from corral.store import (
    NewRun,
    PostgresStore,
    SQLiteStore,
    scoped_tenant,
    tenant_scope,
)
from corral.store.scripts import Result, Script, Statement
from corral.store.tenant_scope import RESTRICTED_ROLE

POSTGRES_URL = os.environ.get(
    "CORRAL_TEST_POSTGRES_URL", "postgresql://postgres@127.0.0.1:5432/test"
)
RUNS = {"run-a1": "acme", "run-a2": "acme", "run-b1": "globex"}


@pytest.fixture
def schema() -> Iterator[str]:
    name = f"test_rls_{uuid.uuid4().hex[:12]}"
    yield name
    drop_schema(name)


@pytest.fixture
async def store(schema: str) -> AsyncIterator[PostgresStore]:
    """A PostgreSQL store with runs of two tenants."""
    opened = PostgresStore(f"{POSTGRES_URL}?schema={schema}")
    await opened.open()
    try:
        await create_runs(opened)
        yield opened
    finally:
        await opened.close()


async def create_runs(store: PostgresStore | SQLiteStore) -> None:
    for run_id, tenant in RUNS.items():
        await store.create_run(
            NewRun(
                run_id=run_id,
                workflow="w",
                workflow_version="1",
                input="{}",
                created_at=1.0,
                tenant=tenant,
            )
        )


def select(query: str, *params: Any) -> Any:
    """A script factory: the rows of one statement."""

    def script(dialect: str) -> Script[list[tuple[Any, ...]]]:
        result = yield Statement(query, params)
        return result.rows

    return script


def change(query: str, *params: Any) -> Any:
    """A script factory: how many rows one statement changed."""

    def script(dialect: str) -> Script[int]:
        result: Result = yield Statement(query, params)
        return result.rowcount

    return script


def drop_schema(schema: str) -> None:
    with psycopg.connect(POSTGRES_URL, autocommit=True) as conn:
        conn.execute(sql.SQL("DROP SCHEMA IF EXISTS {} CASCADE").format(sql.Identifier(schema)))


def run_ids(rows: list[tuple[Any, ...]]) -> set[str]:
    return {row[0] for row in rows}


# -- the scope itself ---------------------------------------------------------------------------


def test_a_scope_is_entered_and_left_with_its_block() -> None:
    assert scoped_tenant() is None
    with tenant_scope("acme"):
        assert scoped_tenant() == "acme"
        with tenant_scope("globex"):
            assert scoped_tenant() == "globex"
        assert scoped_tenant() == "acme"
    assert scoped_tenant() is None


def test_a_scope_needs_a_tenant_name() -> None:
    # An ended scope leaves the setting '' on a connection: a scope of '' must not exist.
    with pytest.raises(StoreError, match="needs a tenant name"), tenant_scope(""):
        pass


# -- the migration --------------------------------------------------------------------------------


async def test_every_table_with_a_tenant_column_has_forced_row_level_security(
    store: PostgresStore, schema: str
) -> None:
    """A later migration that adds a tenant table without the policies fails here."""
    rows = await store.read_script(
        select(
            "SELECT c.relname, c.relrowsecurity, c.relforcerowsecurity,"
            " array(SELECT polname::text FROM pg_policy WHERE polrelid = c.oid ORDER BY 1)"
            " FROM pg_class c JOIN pg_namespace n ON n.oid = c.relnamespace"
            " JOIN pg_attribute a ON a.attrelid = c.oid AND a.attname = 'tenant'"
            " WHERE n.nspname = ? AND c.relkind = 'r' ORDER BY c.relname",
            schema,
        )
    )
    tables = {name for name, *_ in rows}
    assert {"runs", "approvals", "policies", "audit_log", "api_keys", "webhooks"} <= tables
    assert {"principals", "pauses", "budget_counters"} <= tables
    for name, enabled, forced, policies in rows:
        assert (name, enabled, forced) == (name, True, True)
        assert policies == ["corral_tenant_only", "corral_unscoped"], name


async def test_migrating_again_in_another_schema_reuses_the_role(schema: str) -> None:
    # The role is cluster-wide; every schema (each test's, each deployment's) migrates alike.
    other = f"{schema}_2"
    second = PostgresStore(f"{POSTGRES_URL}?schema={other}")
    try:
        await second.open()
        await second.close()
        first = PostgresStore(f"{POSTGRES_URL}?schema={schema}")
        await first.open()
        await create_runs(first)
        with tenant_scope("globex"):
            assert run_ids(await first.read_script(select("SELECT run_id FROM runs"))) == {"run-b1"}
        await first.close()
    finally:
        drop_schema(other)


# -- reads ----------------------------------------------------------------------------------------


async def test_an_unfiltered_read_in_a_scope_returns_the_tenants_rows_only(
    store: PostgresStore,
) -> None:
    unfiltered = select("SELECT run_id, tenant FROM runs")
    with tenant_scope("acme"):
        assert run_ids(await store.read_script(unfiltered)) == {"run-a1", "run-a2"}
        assert {r.run_id for r in await store.list_runs()} == {"run-a1", "run-a2"}
        assert await store.get_run("run-b1") is None
        assert (await store.count_runs())["pending"] == 2
    with tenant_scope("globex"):
        assert run_ids(await store.read_script(unfiltered)) == {"run-b1"}
    with tenant_scope("initech"):
        assert await store.read_script(unfiltered) == []


async def test_outside_a_scope_every_row_is_visible(store: PostgresStore) -> None:
    with tenant_scope("acme"):
        await store.list_runs()
    # The pooled connection the scope used is back to the login role, with no tenant.
    for _ in range(3):
        assert run_ids(await store.read_script(select("SELECT run_id FROM runs"))) == set(RUNS)
        assert {r.run_id for r in await store.list_runs()} == set(RUNS)
        assert await store.has_runnable(now=2.0)


async def test_a_failed_scoped_read_leaves_no_scope_on_its_connection(
    store: PostgresStore,
) -> None:
    with tenant_scope("acme"), pytest.raises(StoreError):
        await store.read_script(select("SELECT no_such_column FROM runs"))
    rows = await store.read_script(select("SELECT current_user, run_id FROM runs"))
    assert {row[1] for row in rows} == set(RUNS)
    assert {row[0] for row in rows} != {RESTRICTED_ROLE}


async def test_concurrent_scopes_each_see_their_own_tenant(store: PostgresStore) -> None:
    async def visible(tenant: str | None) -> set[str]:
        if tenant is None:
            return run_ids(await store.read_script(select("SELECT run_id FROM runs")))
        with tenant_scope(tenant):
            return run_ids(await store.read_script(select("SELECT run_id FROM runs")))

    seen = await asyncio.gather(*(visible(t) for t in ["acme", "globex", None] * 4))
    assert seen == [{"run-a1", "run-a2"}, {"run-b1"}, set(RUNS)] * 4


# -- writes ---------------------------------------------------------------------------------------


async def test_a_scoped_update_of_another_tenants_row_changes_nothing(
    store: PostgresStore,
) -> None:
    with tenant_scope("acme"):
        assert await store.run_script(change("UPDATE runs SET workflow = 'hijacked'")) == 2
        assert await store.run_script(change("DELETE FROM runs WHERE run_id = 'run-b1'")) == 0
    run = await store.get_run("run-b1")
    own = await store.get_run("run-a1")
    assert (run and run.workflow, own and own.workflow) == ("w", "hijacked")


async def test_a_scoped_write_cannot_land_in_another_tenant(store: PostgresStore) -> None:
    insert = (
        "INSERT INTO pauses (tenant, target, paused_at, paused_by, reason)"
        " VALUES (?, 'agent:x', 1.0, 'tests', 'test')"
    )
    with tenant_scope("acme"):
        with pytest.raises(StoreError, match="row-level security"):
            await store.run_script(change(insert, "globex"))
        with pytest.raises(StoreError, match="row-level security"):
            await store.run_script(change("UPDATE runs SET tenant = 'globex'"))
        assert await store.run_script(change(insert, "acme")) == 1
    rows = await store.read_script(select("SELECT tenant FROM pauses"))
    assert rows == [("acme",)]
    assert {r.run_id for r in await store.list_runs(tenant="acme")} == {"run-a1", "run-a2"}


async def test_a_refused_scoped_write_fails_alone_and_the_batch_goes_on_unscoped(
    store: PostgresStore,
) -> None:
    # Submitted together, these share the writer's transaction: the scope must hold for its
    # own operations only, and be gone for the unscoped one after them.
    with tenant_scope("acme"):
        refused = asyncio.ensure_future(
            store.run_script(change("UPDATE runs SET tenant = 'globex' WHERE run_id = 'run-a1'"))
        )
        scoped = asyncio.ensure_future(store.run_script(change("UPDATE runs SET error = 'a'")))
    unscoped = asyncio.ensure_future(store.run_script(change("UPDATE runs SET result = 'all'")))
    batches_before = store.batches
    outcomes = await asyncio.gather(refused, scoped, unscoped, return_exceptions=True)
    assert isinstance(outcomes[0], StoreError)
    assert list(outcomes[1:]) == [2, 3]
    assert store.batches - batches_before == 1
    runs = {r.run_id: r for r in await store.list_runs()}
    assert {run_id: (r.tenant, r.error, r.result) for run_id, r in runs.items()} == {
        "run-a1": ("acme", "a", "all"),
        "run-a2": ("acme", "a", "all"),
        "run-b1": ("globex", None, "all"),
    }


async def test_store_operations_in_a_scope_cannot_reach_another_tenants_run(
    store: PostgresStore,
) -> None:
    with tenant_scope("acme"):
        with pytest.raises(RunNotFound, match="run-b1"):
            await store.cancel_run("run-b1", now=2.0)
        cancelled = await store.cancel_run("run-a1", now=2.0)
    assert cancelled.status == "cancelled"
    other = await store.get_run("run-b1")
    assert other is not None
    assert other.status == "pending"


# -- SQLite --------------------------------------------------------------------------------------


async def test_a_scope_changes_nothing_on_sqlite(tmp_path: Path) -> None:
    store = SQLiteStore(f"sqlite:///{tmp_path / 'corral.db'}")
    await store.open()
    try:
        await create_runs(store)
        with tenant_scope("acme"):
            assert {r.run_id for r in await store.list_runs()} == set(RUNS)
    finally:
        await store.close()


# -- an ordinary login user, as in production ---------------------------------------------------


def _as_user(url: str, user: str) -> str:
    parts = urlsplit(url)
    host = parts.netloc.rsplit("@", 1)[-1]
    return urlunsplit(parts._replace(netloc=f"{user}@{host}"))


@pytest.fixture
def app_user(store: PostgresStore, schema: str) -> Iterator[str]:
    """A login user that owns nothing, set up as docs/operations.md says: allowed to switch to
    the restricted role, not inheriting it."""
    name = f"corral_app_{uuid.uuid4().hex[:10]}"
    user, target = sql.Identifier(name), sql.Identifier(schema)
    with psycopg.connect(POSTGRES_URL, autocommit=True) as conn:
        conn.execute(sql.SQL("CREATE ROLE {} LOGIN NOINHERIT").format(user))
        conn.execute(sql.SQL("GRANT {} TO {}").format(sql.Identifier(RESTRICTED_ROLE), user))
        conn.execute(sql.SQL("GRANT USAGE ON SCHEMA {} TO {}").format(target, user))
        for kind in ("TABLES", "SEQUENCES"):
            conn.execute(
                sql.SQL("GRANT ALL ON ALL {} IN SCHEMA {} TO {}").format(
                    sql.SQL(kind), target, user
                )
            )
    yield name
    with psycopg.connect(POSTGRES_URL, autocommit=True) as conn:
        conn.execute(sql.SQL("DROP OWNED BY {}").format(user))
        conn.execute(sql.SQL("DROP ROLE {}").format(user))


async def test_an_ordinary_user_sees_everything_unscoped_and_one_tenant_scoped(
    store: PostgresStore, schema: str, app_user: str
) -> None:
    # Not a superuser, so row-level security applies to its unscoped sessions too: the
    # permissive policy must let them see every row.
    as_app = PostgresStore(_as_user(f"{POSTGRES_URL}?schema={schema}", app_user))
    await as_app.open()
    try:
        assert {r.run_id for r in await as_app.list_runs()} == set(RUNS)
        with tenant_scope("globex"):
            assert run_ids(await as_app.read_script(select("SELECT run_id FROM runs"))) == {
                "run-b1"
            }
            assert await as_app.run_script(change("UPDATE runs SET error = 'x'")) == 1
        assert await as_app.run_script(change("UPDATE runs SET result = 'y'")) == 3
    finally:
        await as_app.close()


async def test_a_user_that_inherits_the_restricted_role_is_refused(
    store: PostgresStore, schema: str, app_user: str
) -> None:
    with psycopg.connect(POSTGRES_URL, autocommit=True) as conn:
        conn.execute(sql.SQL("ALTER ROLE {} INHERIT").format(sql.Identifier(app_user)))
    as_app = PostgresStore(_as_user(f"{POSTGRES_URL}?schema={schema}", app_user))
    with pytest.raises(StoreError, match="inherits the role corral_tenant"):
        await as_app.open()


async def test_a_user_that_cannot_become_the_restricted_role_gets_a_clear_error(
    store: PostgresStore, schema: str, app_user: str
) -> None:
    with psycopg.connect(POSTGRES_URL, autocommit=True) as conn:
        conn.execute(
            sql.SQL("REVOKE {} FROM {}").format(
                sql.Identifier(RESTRICTED_ROLE), sql.Identifier(app_user)
            )
        )
    as_app = PostgresStore(_as_user(f"{POSTGRES_URL}?schema={schema}", app_user))
    await as_app.open()
    try:
        with tenant_scope("acme"):
            with pytest.raises(StoreError, match="GRANT corral_tenant TO"):
                await as_app.list_runs()
            with pytest.raises(StoreError, match="GRANT corral_tenant TO"):
                await as_app.run_script(change("UPDATE runs SET error = 'x'"))
        assert len(await as_app.list_runs()) == 3
    finally:
        await as_app.close()
