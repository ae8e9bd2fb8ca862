"""SQLite specifics: URLs, durability settings, files that are not (or no longer) ours, locks."""

from __future__ import annotations

import contextlib
import random
import sqlite3
from collections.abc import Iterator
from pathlib import Path

import pytest

from corral import StoreError, StoreUnavailable
from corral.store import NewRun, PostgresStore, SQLiteStore, open_store
from corral.store.migrations import load_migrations
from corral.store.sqlite import parse_sqlite_url

LATEST = load_migrations("sqlite")[-1].version


def url_of(path: Path, query: str = "") -> str:
    return f"sqlite:///{path}{query}"


@contextlib.contextmanager
def connect(path: Path) -> Iterator[sqlite3.Connection]:
    conn = sqlite3.connect(path, isolation_level=None)
    try:
        yield conn
    finally:
        conn.close()


async def make_corral_db(path: Path) -> None:
    store = SQLiteStore(url_of(path))
    await store.open()
    await store.close()


# -- URLs --------------------------------------------------------------------------------------


def test_url_forms() -> None:
    assert parse_sqlite_url("sqlite:///rel/corral.db") == (Path("rel/corral.db"), "NORMAL")
    assert parse_sqlite_url("sqlite:////abs/corral.db") == (Path("/abs/corral.db"), "NORMAL")
    assert parse_sqlite_url("sqlite:///x.db?synchronous=full") == (Path("x.db"), "FULL")
    assert parse_sqlite_url("sqlite:///x.db?synchronous=NORMAL")[1] == "NORMAL"


@pytest.mark.parametrize(
    ("url", "message"),
    [
        ("postgresql://localhost/x", "not a SQLite URL"),
        ("sqlite://", "names no file"),
        ("sqlite:///", "names no file"),
        ("sqlite:///:memory:", "names no file"),
        ("sqlite:///x.db?synchronous=OFF", "synchronous='OFF'"),
    ],
)
def test_bad_urls_are_refused_with_the_url(url: str, message: str) -> None:
    with pytest.raises(StoreError, match=message) as info:
        parse_sqlite_url(url)
    assert info.value.ids == {"url": url}


def test_open_store_picks_the_backend_by_scheme(tmp_path: Path) -> None:
    assert isinstance(open_store(url_of(tmp_path / "a.db")), SQLiteStore)
    assert isinstance(open_store("postgresql://localhost/corral"), PostgresStore)
    assert isinstance(open_store("postgres://localhost/corral?schema=x"), PostgresStore)
    with pytest.raises(StoreError, match="unsupported database URL"):
        open_store("mysql://localhost/corral")


def test_synchronous_from_the_environment(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    monkeypatch.setenv("CORRAL_SQLITE_SYNCHRONOUS", "full")
    assert SQLiteStore(url_of(tmp_path / "a.db")).synchronous == "FULL"
    # The URL wins over the environment.
    assert SQLiteStore(url_of(tmp_path / "a.db", "?synchronous=NORMAL")).synchronous == "NORMAL"


@pytest.mark.parametrize(("query", "level"), [("", 1), ("?synchronous=FULL", 2)])
async def test_connections_use_wal_and_the_synchronous_level(
    tmp_path: Path, query: str, level: int
) -> None:
    store = SQLiteStore(url_of(tmp_path / "corral.db", query))
    await store.open()
    try:
        conn = store._connect()  # a connection configured as the store's own
        try:
            assert conn.execute("PRAGMA synchronous").fetchone()[0] == level
            assert conn.execute("PRAGMA journal_mode").fetchone()[0] == "wal"
        finally:
            conn.close()
    finally:
        await store.close()


async def test_relative_url_and_missing_folders(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.chdir(tmp_path)
    store = SQLiteStore("sqlite:///nested/dir/corral.db")
    await store.open()
    await store.close()
    assert (tmp_path / "nested" / "dir" / "corral.db").exists()


async def test_a_store_that_is_not_open_says_so(tmp_path: Path) -> None:
    store = SQLiteStore(url_of(tmp_path / "corral.db"))
    with pytest.raises(StoreError, match="not open"):
        await store.get_run("x")
    with pytest.raises(StoreError, match="not open"):
        await store.create_run(NewRun("r", "wf", "1", "null", 0.0))


# -- files that are not a Corral database (of this version) ------------------------------------


async def test_a_corrupt_file_is_refused_naming_its_path(tmp_path: Path) -> None:
    path = tmp_path / "corral.db"
    path.write_bytes(random.Random(7).randbytes(8192))
    store = SQLiteStore(url_of(path))
    with pytest.raises(StoreError) as info:
        await store.open()
    assert not isinstance(info.value, StoreUnavailable)  # retrying will not help
    assert str(path) in info.value.message
    assert info.value.ids == {"path": str(path)}


async def test_another_sqlite_database_is_refused(tmp_path: Path) -> None:
    path = tmp_path / "app.db"
    with connect(path) as conn:
        conn.execute("CREATE TABLE users (id INTEGER PRIMARY KEY, name TEXT)")
    with pytest.raises(StoreError, match="not a Corral one") as info:
        await SQLiteStore(url_of(path)).open()
    assert "users" in info.value.message
    assert str(path) in info.value.message
    with connect(path) as conn:  # and it was left alone
        tables = {r[0] for r in conn.execute("SELECT name FROM sqlite_master WHERE type='table'")}
    assert tables == {"users"}


async def test_a_newer_schema_asks_to_upgrade_corral(tmp_path: Path) -> None:
    path = tmp_path / "corral.db"
    await make_corral_db(path)
    with connect(path) as conn:
        conn.execute(
            "INSERT INTO corral_schema (version, name) VALUES (?, 'from_the_future')", (LATEST + 1,)
        )
    with pytest.raises(StoreError, match="upgrade Corral") as info:
        await SQLiteStore(url_of(path)).open()
    assert f"schema version {LATEST + 1}" in info.value.message
    assert str(path) in info.value.message


async def test_an_older_schema_asks_to_migrate(tmp_path: Path) -> None:
    path = tmp_path / "corral.db"
    await make_corral_db(path)
    with connect(path) as conn:
        conn.execute("UPDATE corral_schema SET version = version - ? ", (LATEST,))
    with pytest.raises(StoreError, match="corral db migrate") as info:
        await SQLiteStore(url_of(path)).open()
    assert not isinstance(info.value, StoreUnavailable)
    assert str(path) in info.value.message


async def test_an_existing_corral_database_opens(tmp_path: Path) -> None:
    path = tmp_path / "corral.db"
    await make_corral_db(path)
    store = SQLiteStore(url_of(path))
    await store.open()
    await store.close()
    with connect(path) as conn:
        versions = [r[0] for r in conn.execute("SELECT version FROM corral_schema")]
    assert versions == list(range(1, LATEST + 1))  # applied once, not again on reopening


async def test_a_constraint_violation_is_not_reported_as_unavailable(tmp_path: Path) -> None:
    """StoreUnavailable means "try again later"; a duplicate run id will never succeed."""
    store = SQLiteStore(url_of(tmp_path / "corral.db"))
    await store.open()
    try:
        await store.create_run(NewRun("same-id", "wf", "1", "null", 0.0))
        with pytest.raises(StoreError) as info:
            await store.create_run(NewRun("same-id", "wf", "1", "null", 0.0))
        assert not isinstance(info.value, StoreUnavailable), info.value
    finally:
        await store.close()


# -- locks -------------------------------------------------------------------------------------


async def test_a_locked_database_is_unavailable_not_broken(tmp_path: Path) -> None:
    path = tmp_path / "corral.db"
    await make_corral_db(path)
    store = SQLiteStore(url_of(path), busy_timeout=0.2)
    await store.open()
    try:
        with connect(path) as holder:
            holder.execute("BEGIN EXCLUSIVE")
            with pytest.raises(StoreUnavailable, match="locked") as info:
                await store.create_run(NewRun("r1", "wf", "1", "null", 0.0))
            assert info.value.ids == {"path": str(path)}
            holder.execute("ROLLBACK")
        # Once the lock is gone the same store works again.
        run, created = await store.create_run(NewRun("r1", "wf", "1", "null", 0.0))
        assert created
        assert run.run_id == "r1"
    finally:
        await store.close()


async def test_a_locked_database_reads_but_refuses_writes(tmp_path: Path) -> None:
    """WAL lets readers work beside a writer; a write waits its busy timeout, then says why."""
    path = tmp_path / "corral.db"
    await make_corral_db(path)
    with connect(path) as holder:
        holder.execute("BEGIN EXCLUSIVE")
        holder.execute("UPDATE runs SET updated_at = updated_at")
        store = SQLiteStore(url_of(path), busy_timeout=0.2)
        await store.open()
        try:
            assert await store.list_runs() == []
            with pytest.raises(StoreUnavailable, match="locked"):
                await store.create_run(
                    NewRun(
                        run_id="r", workflow="w", workflow_version="1", input="null", created_at=0.0
                    )
                )
        finally:
            await store.close()
        holder.execute("ROLLBACK")


async def test_two_stores_share_one_file(tmp_path: Path) -> None:
    """Several worker processes may share one SQLite file: each sees the other's commits."""
    path = tmp_path / "corral.db"
    first, second = SQLiteStore(url_of(path)), SQLiteStore(url_of(path))
    await first.open()
    await second.open()
    try:
        await first.create_run(NewRun("shared", "wf", "1", "null", 0.0))
        seen = await second.get_run("shared")
        assert seen is not None
        claimed = await second.claim_runs(worker_id="p2", limit=1, now=1.0, lease_ttl=30)
        assert [r.run_id for r in claimed] == ["shared"]
        assert await first.claim_runs(worker_id="p1", limit=1, now=1.0, lease_ttl=30) == []
    finally:
        await first.close()
        await second.close()
