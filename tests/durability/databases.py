"""Corral's database as the durability suites see it from outside: plain SQL on either backend.

The suites inspect and mutate the database behind the engine's back (back-dated leases, runs set
back to pending, progress of a fleet) in SQL, never through the store under test. SQL is written
once with `?` placeholders and the few constructs both dialects share. The checker
(`effect_ledger.check`) reads runs and steps from a SQLite file: on PostgreSQL it reads a copy
taken once the fleet has drained.
"""

from __future__ import annotations

import contextlib
import sqlite3
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Protocol

import psycopg
from psycopg import sql

from corral.store.postgresql import parse_postgres_url

COPIED_TABLES = ("runs", "steps", "signals")


class Database(Protocol):
    """A Corral database the suites can read and write in SQL."""

    @property
    def url(self) -> str: ...

    @property
    def backend(self) -> str: ...

    def query(self, statement: str, params: Sequence[object] = ()) -> list[tuple[Any, ...]]: ...

    def execute(self, statement: str, params: Sequence[object] = ()) -> int: ...

    def execute_many(self, statement: str, rows: Sequence[Sequence[object]]) -> None: ...

    def checker_file(self, folder: Path) -> Path:
        """A SQLite file with this database's runs and steps, for `effect_ledger.check`."""
        ...


@dataclass(frozen=True)
class SQLiteDatabase:
    path: Path
    backend: str = "sqlite"

    @property
    def url(self) -> str:
        return f"sqlite:///{self.path.resolve()}"

    def query(self, statement: str, params: Sequence[object] = ()) -> list[tuple[Any, ...]]:
        with contextlib.closing(sqlite3.connect(self.path, timeout=30.0)) as conn:
            return conn.execute(statement, tuple(params)).fetchall()

    def execute(self, statement: str, params: Sequence[object] = ()) -> int:
        with contextlib.closing(
            sqlite3.connect(self.path, timeout=30.0, isolation_level=None)
        ) as conn:
            return conn.execute(statement, tuple(params)).rowcount

    def execute_many(self, statement: str, rows: Sequence[Sequence[object]]) -> None:
        with contextlib.closing(sqlite3.connect(self.path, timeout=30.0)) as conn:
            conn.executemany(statement, [tuple(row) for row in rows])
            conn.commit()

    def checker_file(self, folder: Path) -> Path:
        return self.path


@dataclass(frozen=True)
class PostgresDatabase:
    """A schema of a PostgreSQL database: `postgresql://…/db?schema=NAME`."""

    full_url: str
    backend: str = "postgresql"

    @property
    def url(self) -> str:
        return self.full_url

    @property
    def schema(self) -> str:
        return parse_postgres_url(self.full_url)[1]

    def _connect(self) -> psycopg.Connection[tuple[Any, ...]]:
        conninfo, schema = parse_postgres_url(self.full_url)
        conn = psycopg.connect(conninfo, autocommit=True, connect_timeout=10)
        conn.execute(sql.SQL("SET search_path TO {}").format(sql.Identifier(schema)))
        return conn

    def query(self, statement: str, params: Sequence[object] = ()) -> list[tuple[Any, ...]]:
        with self._connect() as conn:
            return conn.execute(_pg(statement), tuple(params)).fetchall()

    def execute(self, statement: str, params: Sequence[object] = ()) -> int:
        with self._connect() as conn:
            return conn.execute(_pg(statement), tuple(params)).rowcount

    def execute_many(self, statement: str, rows: Sequence[Sequence[object]]) -> None:
        with self._connect() as conn, conn.transaction(), conn.cursor() as cursor:
            cursor.executemany(_pg(statement), [tuple(row) for row in rows])

    def checker_file(self, folder: Path) -> Path:
        target = folder / "corral-copy.db"
        target.unlink(missing_ok=True)
        with self._connect() as source, contextlib.closing(sqlite3.connect(target)) as copy:
            for table in COPIED_TABLES:
                cur = source.execute(sql.SQL("SELECT * FROM {}").format(sql.Identifier(table)))
                assert cur.description is not None
                columns = [column.name for column in cur.description]
                copy.execute(f"CREATE TABLE {table} ({', '.join(columns)})")
                marks = ", ".join("?" for _ in columns)
                copy.executemany(f"INSERT INTO {table} VALUES ({marks})", cur.fetchall())
            copy.commit()
        return target

    def drop(self) -> None:
        conninfo, schema = parse_postgres_url(self.full_url)
        with psycopg.connect(conninfo, autocommit=True, connect_timeout=10) as conn:
            conn.execute(sql.SQL("DROP SCHEMA IF EXISTS {} CASCADE").format(sql.Identifier(schema)))


def _pg(statement: str) -> sql.SQL:
    """`?` placeholders to psycopg's (the suites' SQL has no literal `?` or `%`)."""
    assert "%" not in statement, statement
    return sql.SQL(statement.replace("?", "%s"))


# -- what the suites ask of a Corral database --------------------------------------------------


def backdate_leases(db: Database) -> int:
    """Expire every lease now, as if the lease TTL had passed since the worker died."""
    return db.execute("UPDATE runs SET lease_expires_at = 0 WHERE status = 'running'")


def progress(db: Database) -> tuple[int, int, float]:
    """Unsettled runs, journal entries, latest run update: unchanged means nothing moves."""
    unsettled, updated = db.query(
        "SELECT count(*), coalesce(max(updated_at), 0) FROM runs"
        " WHERE status IN ('pending', 'running', 'waiting')"
    )[0]
    steps = db.query("SELECT count(*) FROM steps")[0][0]
    return int(unsettled), int(steps), float(updated)


def unsettled_runs(db: Database, limit: int = 10) -> list[tuple[object, ...]]:
    """Runs not settled yet, with who holds them: for a stalled fleet's failure message."""
    return db.query(
        "SELECT run_id, status, lease_owner, lease_epoch, lease_expires_at, wake_at, claims"
        " FROM runs WHERE status IN ('pending', 'running', 'waiting') LIMIT ?",
        (limit,),
    )


def last_write(db: Database) -> float:
    """The latest time any run or journal entry was written."""
    started, finished = db.query("SELECT max(started_at), max(finished_at) FROM steps")[0]
    updated = db.query("SELECT max(updated_at) FROM runs")[0][0]
    return max(float(started or 0), float(finished or 0), float(updated or 0))
