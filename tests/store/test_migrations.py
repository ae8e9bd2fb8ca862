"""Migrations: numbered files applied in order; a fresh database equals a migrated one.

Written over whatever files `corral/store/migrations/` holds (shared and SQLite's own), so a new
migration is checked here as soon as it is added.
"""

from __future__ import annotations

import contextlib
import re
import sqlite3
from collections.abc import Iterator
from importlib.resources import files
from pathlib import Path

import pytest

from corral import StoreError
from corral.store import SQLiteStore
from corral.store.migrations import Migration, load_migrations

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
    assert statements
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
