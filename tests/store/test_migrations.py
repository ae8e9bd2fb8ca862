"""Migrations: numbered files applied in order; a fresh database equals a migrated one.

Written over whatever files `corral/store/migrations/` holds (shared and each dialect's own), so
a new migration is checked here as soon as it is added, on SQLite and on PostgreSQL. Upgrades
are tested for real: a database left at version 1 by the previous Corral is refused, reported by
`schema_status()`, upgraded by `migrate()`, and then used.
"""

from __future__ import annotations

import contextlib
import os
import re
import sqlite3
import uuid
from collections.abc import Iterator
from importlib.resources import files
from pathlib import Path

import psycopg
import pytest
from psycopg import sql

from corral import StoreError
from corral.store import NewRun, SQLiteStore, open_store
from corral.store.migrations import SCHEMA_TABLE, Dialect, Migration, load_migrations
from corral.store.postgresql import PostgresStore, parse_postgres_url
from corral.store.sqlite import parse_sqlite_url

MIGRATIONS = load_migrations("sqlite")
_FILE_NAME = re.compile(r"^(\d{4})_(\w+)\.sql$")


@contextlib.contextmanager
def connect(path: Path) -> Iterator[sqlite3.Connection]:
    conn = sqlite3.connect(path, isolation_level=None)
    try:
        yield conn
    finally:
        conn.close()


def normalise(sql: str) -> str:
    """SQL text without layout differences: one space between tokens, none inside brackets."""
    text = re.sub(r"--[^\n]*", "", sql)
    text = re.sub(r"\s+", " ", text).strip()
    return re.sub(r"\s*([(),])\s*", r"\1", text)


def schema_of(path: Path) -> list[tuple[str, str, str, str]]:
    """(type, name, table, SQL) of every table, index, view and trigger but the version table."""
    with connect(path) as conn:
        rows = conn.execute(
            "SELECT type, name, tbl_name, coalesce(sql, '') FROM sqlite_master"
            " WHERE tbl_name != 'corral_schema' ORDER BY type, name"
        ).fetchall()
    return [(kind, name, table, normalise(sql)) for kind, name, table, sql in rows]


def apply_migration(path: Path, migration: Migration) -> None:
    """Apply one migration in its own connection and transaction, as an upgrade would."""
    with connect(path) as conn:
        conn.execute("BEGIN IMMEDIATE")
        for statement in migration.statements():
            conn.execute(statement)
        conn.execute("COMMIT")


def test_migration_files_are_numbered_1_to_n() -> None:
    # Shared files and dialect overrides together make the dialect's set.
    sql_files = sorted(
        {
            entry.name
            for folder in ("common", "sqlite")
            for entry in files("corral.store.migrations").joinpath(folder).iterdir()
            if entry.name.endswith(".sql")
        }
    )
    # A file the loader's pattern would skip silently is a migration that never runs.
    assert all(_FILE_NAME.match(name) for name in sql_files), sql_files
    assert [int(name[:4]) for name in sql_files] == list(range(1, len(sql_files) + 1))
    assert [(m.version, m.name) for m in MIGRATIONS] == [
        (int(name[:4]), _FILE_NAME.match(name)[2])  # type: ignore[index]
        for name in sql_files
    ]


@pytest.mark.parametrize("migration", MIGRATIONS, ids=lambda m: f"{m.version:04d}_{m.name}")
def test_each_migration_splits_into_statements(migration: Migration) -> None:
    statements = migration.statements()
    # Only a file of comments may have none: a migration this dialect has nothing to do for.
    assert statements or all(
        line.lstrip().startswith("--") for line in migration.sql.splitlines() if line.strip()
    )
    for statement in statements:
        assert sqlite3.complete_statement(statement + ";"), statement


async def test_a_fresh_database_equals_one_migrated_step_by_step(tmp_path: Path) -> None:
    fresh = tmp_path / "fresh.db"
    store = SQLiteStore(f"sqlite:///{fresh}")
    await store.open()
    await store.close()

    stepped = tmp_path / "stepped.db"
    previous: list[tuple[str, str, str, str]] = []
    for migration in MIGRATIONS:
        apply_migration(stepped, migration)
        current = schema_of(stepped)
        if migration.statements():
            assert current != previous, f"migration {migration.version} changed nothing"
        previous = current

    assert schema_of(fresh) == schema_of(stepped)
    with connect(fresh) as conn:
        recorded = conn.execute("SELECT version, name FROM corral_schema ORDER BY version")
        assert recorded.fetchall() == [(m.version, m.name) for m in MIGRATIONS]


async def test_a_database_behind_the_latest_migration_is_refused(tmp_path: Path) -> None:
    """Every older version is refused with a pointer to `corral db migrate`, never half-used."""
    for behind in range(len(MIGRATIONS) - 1, -1, -1):
        path = tmp_path / f"v{behind}.db"
        store = SQLiteStore(f"sqlite:///{path}")
        await store.open()
        await store.close()
        with connect(path) as conn:
            conn.execute("DELETE FROM corral_schema WHERE version > ?", (behind,))
            if behind == 0:
                conn.execute("INSERT INTO corral_schema (version, name) VALUES (0, 'none')")
        with pytest.raises(StoreError, match="corral db migrate"):
            await SQLiteStore(f"sqlite:///{path}").open()


# -- PostgreSQL -----------------------------------------------------------------------------------

PG_MIGRATIONS = load_migrations("postgresql")
PgSchema = list[tuple[str, ...]]


def pg_schema_of(url: str) -> PgSchema:
    """Columns, indexes and constraints of the URL's schema but the version table, with the
    schema's own name taken out of definitions (two schemas are compared)."""
    conninfo, schema = parse_postgres_url(url)
    found: PgSchema = []
    with psycopg.connect(conninfo) as conn:
        columns = conn.execute(
            "SELECT table_name, column_name, ordinal_position::text, data_type, is_nullable,"
            " coalesce(column_default, ''), is_identity, coalesce(identity_generation, '')"
            " FROM information_schema.columns"
            " WHERE table_schema = %s AND table_name != 'corral_schema'"
            " ORDER BY table_name, ordinal_position",
            (schema,),
        ).fetchall()
        found += [("column", *map(str, row)) for row in columns]
        indexes = conn.execute(
            "SELECT tablename, indexname, indexdef FROM pg_indexes"
            " WHERE schemaname = %s AND tablename != 'corral_schema' ORDER BY indexname",
            (schema,),
        ).fetchall()
        found += [("index", t, i, d.replace(f"{schema}.", "")) for t, i, d in indexes]
        constraints = conn.execute(
            "SELECT c.relname, con.conname, pg_get_constraintdef(con.oid)"
            " FROM pg_constraint con JOIN pg_class c ON c.oid = con.conrelid"
            " JOIN pg_namespace n ON n.oid = c.relnamespace"
            " WHERE n.nspname = %s AND c.relname != 'corral_schema'"
            " ORDER BY c.relname, con.conname",
            (schema,),
        ).fetchall()
        found += [("constraint", t, n, d.replace(f"{schema}.", "")) for t, n, d in constraints]
        policies = conn.execute(
            "SELECT c.relname, c.relrowsecurity::text, c.relforcerowsecurity::text,"
            " coalesce(p.polname, ''), coalesce(p.polpermissive::text, ''),"
            " coalesce(pg_get_expr(p.polqual, p.polrelid), ''),"
            " coalesce(pg_get_expr(p.polwithcheck, p.polrelid), '')"
            " FROM pg_class c JOIN pg_namespace n ON n.oid = c.relnamespace"
            " LEFT JOIN pg_policy p ON p.polrelid = c.oid"
            " WHERE n.nspname = %s AND c.relkind = 'r' AND c.relname != 'corral_schema'"
            " ORDER BY c.relname, p.polname",
            (schema,),
        ).fetchall()
        found += [("security", *row) for row in policies]
    return found


def pg_apply_migration(url: str, migration: Migration) -> None:
    """Apply one migration in its own connection and transaction, as an upgrade would."""
    conninfo, schema = parse_postgres_url(url)
    with psycopg.connect(conninfo) as conn, conn.transaction():
        conn.execute(sql.SQL("CREATE SCHEMA IF NOT EXISTS {}").format(sql.Identifier(schema)))
        conn.execute(sql.SQL("SET LOCAL search_path TO {}").format(sql.Identifier(schema)))
        for statement in migration.statements():
            conn.execute(statement.encode())  # bytes: run as written, no placeholders


@pytest.fixture
def pg_url_pair() -> Iterator[tuple[str, str]]:
    """Two fresh PostgreSQL schemas (dropped afterwards)."""
    conninfo = os.environ.get(
        "CORRAL_TEST_POSTGRES_URL", "postgresql://postgres@127.0.0.1:5432/test"
    )
    schemas = [f"test_mig_{uuid.uuid4().hex[:12]}" for _ in range(2)]
    yield (f"{conninfo}?schema={schemas[0]}", f"{conninfo}?schema={schemas[1]}")
    with psycopg.connect(conninfo, autocommit=True) as conn:
        for schema in schemas:
            conn.execute(sql.SQL("DROP SCHEMA IF EXISTS {} CASCADE").format(sql.Identifier(schema)))


async def test_a_fresh_postgresql_schema_equals_one_migrated_step_by_step(
    pg_url_pair: tuple[str, str],
) -> None:
    fresh, stepped = pg_url_pair
    store = PostgresStore(fresh)
    await store.open()
    await store.close()

    previous: PgSchema = []
    for migration in PG_MIGRATIONS:
        pg_apply_migration(stepped, migration)
        current = pg_schema_of(stepped)
        assert current != previous, f"migration {migration.version} changed nothing"
        previous = current

    assert pg_schema_of(fresh) == pg_schema_of(stepped)
    assert any(row[0] == "index" and row[2] == "runs_workflow_created" for row in previous)
    conninfo, schema = parse_postgres_url(fresh)
    with psycopg.connect(conninfo, options=f"-c search_path={schema}") as conn:
        recorded = conn.execute("SELECT version, name FROM corral_schema ORDER BY version")
        assert recorded.fetchall() == [(m.version, m.name) for m in PG_MIGRATIONS]


# -- upgrading a database the previous Corral left, on both backends ------------------------------


def dialect_of(url: str) -> Dialect:
    return "sqlite" if url.startswith("sqlite:") else "postgresql"


def create_at_version_1(url: str) -> None:
    """What the Corral with only migration 1 created: its tables and one row in corral_schema,
    plus a run it stored (which must survive the upgrade)."""
    first = load_migrations(dialect_of(url))[0]
    statements = [SCHEMA_TABLE, *first.statements()]
    version_row = (first.version, first.name, 0.0)
    old_run = ("old-run", "default", "greet", "1", "succeeded", '{"name": "Ada"}', "{}", 1.0, 2.0)
    insert_run = (
        "INSERT INTO runs (run_id, tenant, workflow, workflow_version, status, input, result,"
        " created_at, updated_at) VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?)"
    )
    insert_version = "INSERT INTO corral_schema (version, name, applied_at) VALUES (?, ?, ?)"
    if dialect_of(url) == "sqlite":
        path, _ = parse_sqlite_url(url)
        with connect(path) as conn:
            conn.execute("BEGIN IMMEDIATE")
            for statement in statements:
                conn.execute(statement)
            conn.execute(insert_version, version_row)
            conn.execute(insert_run, old_run)
            conn.execute("COMMIT")
        return
    conninfo, schema = parse_postgres_url(url)
    with psycopg.connect(conninfo) as pg, pg.transaction():
        pg.execute(sql.SQL("CREATE SCHEMA IF NOT EXISTS {}").format(sql.Identifier(schema)))
        pg.execute(sql.SQL("SET LOCAL search_path TO {}").format(sql.Identifier(schema)))
        for statement in statements:
            pg.execute(statement.encode())
        pg.execute(insert_version.replace("?", "%s").encode(), version_row)
        pg.execute(insert_run.replace("?", "%s").encode(), old_run)


async def test_a_version_1_database_is_reported_refused_then_upgraded(db_url: str) -> None:
    latest = load_migrations(dialect_of(db_url))[-1]
    assert latest.version >= 2, "this test needs a migration after the first"
    create_at_version_1(db_url)

    store = open_store(db_url)
    status = await store.schema_status()
    assert (status.current, status.latest, status.up_to_date) == (1, latest.version, False)
    assert [m.version for m in status.pending] == list(range(2, latest.version + 1))

    with pytest.raises(StoreError, match="Back it up, then run `corral db migrate`"):
        await open_store(db_url).open()
    assert (await store.schema_status()).current == 1  # refusing changed nothing

    applied = await store.migrate()
    assert [m.version for m in applied] == list(range(2, latest.version + 1))
    assert (await store.schema_status()).up_to_date
    assert await store.migrate() == []  # a second run is a no-op

    upgraded = open_store(db_url)
    await upgraded.open()
    try:
        old = await upgraded.get_run("old-run")
        assert old is not None
        assert (old.workflow, old.status) == ("greet", "succeeded")
        _, created = await upgraded.create_run(
            NewRun(
                run_id="new-run", workflow="greet", workflow_version="1", input="{}", created_at=3.0
            )
        )
        assert created
        listed = await upgraded.list_runs(workflow="greet")
        assert [r.run_id for r in listed] == ["new-run", "old-run"]
    finally:
        await upgraded.close()


async def test_migrate_refuses_a_newer_database_and_changes_nothing(db_url: str) -> None:
    store = open_store(db_url)
    await store.migrate()
    future = load_migrations(dialect_of(db_url))[-1].version + 1
    insert = "INSERT INTO corral_schema (version, name) VALUES (%s, 'from_the_future')"
    if dialect_of(db_url) == "sqlite":
        with connect(parse_sqlite_url(db_url)[0]) as conn:
            conn.execute(insert.replace("%s", "?"), (future,))
    else:
        conninfo, schema = parse_postgres_url(db_url)
        with psycopg.connect(conninfo, options=f"-c search_path={schema}") as pg:
            pg.execute(insert.encode(), (future,))
    with pytest.raises(StoreError, match="upgrade Corral"):
        await store.migrate()
    assert (await store.schema_status()).current == future
