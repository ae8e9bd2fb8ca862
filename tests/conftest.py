"""Fixtures shared by every suite: a store per backend, a virtual clock, a `Corral` on both.

The `store` fixture is parametrized over `BACKENDS`, so every test that uses it (directly or via
`corral`) runs once per backend: the store contract suite and the engine suite are the same on
SQLite and, when it joins, PostgreSQL. A new backend adds its name to `BACKENDS` and a branch to
`_database_url`; nothing else changes.
"""

from __future__ import annotations

import os
import uuid
from collections.abc import AsyncIterator, Iterator
from pathlib import Path

import psycopg
import pytest
from psycopg import sql

from corral import Corral
from corral.store import Store, open_store
from corral.testing import FakeClock

BACKENDS = ["sqlite", "postgresql"]
"""Every store backend the suites run on."""

# The global switch: no test may send a model request off this machine (worker processes the
# tests start inherit it). Model clients are tested against servers on 127.0.0.1.
os.environ["CORRAL_ALLOW_NETWORK_MODELS"] = "0"

POSTGRES_URL = os.environ.get(
    "CORRAL_TEST_POSTGRES_URL", "postgresql://postgres@127.0.0.1:5432/test"
)
"""The PostgreSQL server the suites use; each test gets a schema of its own there."""


def _database_url(backend: str, tmp_path: Path, schema: str) -> str:
    if backend == "sqlite":
        # tmp_path is absolute, so this is the four-slash absolute form of a SQLite URL.
        return f"sqlite:///{tmp_path / 'corral.db'}"
    if backend == "postgresql":
        return f"{POSTGRES_URL}?schema={schema}"
    raise NotImplementedError(f"no test database for backend {backend!r}")


def drop_schema(schema: str) -> None:
    with psycopg.connect(POSTGRES_URL, autocommit=True) as conn:
        conn.execute(sql.SQL("DROP SCHEMA IF EXISTS {} CASCADE").format(sql.Identifier(schema)))


@pytest.fixture(params=BACKENDS)
def backend(request: pytest.FixtureRequest) -> str:
    """The name of the store backend this test runs on."""
    name: str = request.param
    return name


@pytest.fixture
def db_url(backend: str, tmp_path: Path) -> Iterator[str]:
    """The URL of a fresh, empty database of the backend under test (on PostgreSQL, a schema
    of its own, dropped afterwards)."""
    schema = f"test_{uuid.uuid4().hex[:12]}"
    yield _database_url(backend, tmp_path, schema)
    if backend == "postgresql":
        drop_schema(schema)


@pytest.fixture
def clock() -> FakeClock:
    """Virtual time: it moves only when a test calls `clock.advance()`."""
    return FakeClock()


@pytest.fixture
async def store(db_url: str) -> AsyncIterator[Store]:
    """An open store on a fresh database, closed after the test."""
    opened = open_store(db_url)
    await opened.open()
    try:
        yield opened
    finally:
        await opened.close()


@pytest.fixture
def lease_ttl() -> float:
    """The lease of the `corral` fixture's worker; a test module overrides it to change it."""
    return 30.0


@pytest.fixture
async def corral(store: Store, clock: FakeClock, lease_ttl: float) -> AsyncIterator[Corral]:
    """A `Corral` on the test's store and virtual clock; no heartbeat unless the clock moves."""
    instance = Corral(
        store=store, clock=clock, lease_ttl=lease_ttl, heartbeat_interval=None, poll_interval=0.5
    )
    await instance.open()
    try:
        yield instance
    finally:
        await instance.close()
