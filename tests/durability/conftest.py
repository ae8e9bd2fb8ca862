"""Fixtures of the durability suites: fleets of worker processes that never outlive a test.

`make_fleet` follows the `backend` fixture (tests/conftest.py), so a suite that makes fleets runs
on SQLite and on PostgreSQL; on PostgreSQL each fleet gets a fresh schema, dropped afterwards.
A test that parametrizes `backend` itself picks its own backends.
"""

from __future__ import annotations

import os
import uuid
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest

from . import effect_ledger
from .databases import Database, PostgresDatabase, SQLiteDatabase
from .harness import Fleet

BACKENDS = ("sqlite", "postgresql")
"""As tests/conftest.py's: the suites that parametrize `backend` themselves use these."""
POSTGRES_URL = os.environ.get(
    "CORRAL_TEST_POSTGRES_URL", "postgresql://postgres@127.0.0.1:5432/test"
)
"""The shared server, as in tests/conftest.py: each fleet gets a schema of its own there."""


def new_database(backend: str, folder: Path, *, server_url: str | None = None) -> Database:
    """A fresh, empty Corral database of `backend` for a fleet in `folder`."""
    if backend == "sqlite":
        return SQLiteDatabase(folder / "corral.db")
    if backend == "postgresql":
        server = server_url or POSTGRES_URL
        return PostgresDatabase(f"{server}?schema=dur_{uuid.uuid4().hex[:12]}")
    raise NotImplementedError(f"no durability database for backend {backend!r}")


def new_fleet(folder: Path, *, database: Database | None = None, **options: Any) -> Fleet:
    """A fleet on a fresh Corral database (SQLite in `folder` unless given) and a fresh effect
    ledger in `folder`."""
    folder.mkdir(parents=True, exist_ok=True)
    ledger = folder / "ledger.db"
    effect_ledger.create(ledger)
    return Fleet(folder, database or SQLiteDatabase(folder / "corral.db"), ledger, **options)


@pytest.fixture
def make_fleet(tmp_path: Path, backend: str) -> Iterator[Callable[..., Fleet]]:
    """Make fleets on the test's backend; every process they started is killed when the test
    ends, pass or fail, and every PostgreSQL schema they used is dropped."""
    fleets: list[Fleet] = []

    def make(**options: Any) -> Fleet:
        folder = tmp_path / f"fleet{len(fleets)}"
        fleet = new_fleet(folder, database=new_database(backend, folder), **options)
        fleets.append(fleet)
        return fleet

    yield make
    for fleet in fleets:
        fleet.close()
    for fleet in fleets:
        if isinstance(fleet.database, PostgresDatabase):
            fleet.database.drop()
