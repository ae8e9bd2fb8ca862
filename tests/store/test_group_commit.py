"""Group commit: one writer thread, many waiters, one transaction per batch, failures isolated.

To make a batch deterministic, the writer is first given an operation that blocks until the test
has queued everything else: the queued operations then form the next batch together.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import sqlite3
import threading
from collections.abc import AsyncIterator, Awaitable, Callable, Iterator
from pathlib import Path
from typing import Any

import pytest

from corral import LeaseLost, RunNotFound
from corral.store import NewRun, SQLiteStore, StepWrite
from corral.store.group_commit import Batch, GroupCommitWriter

T0 = 1_700_000_000.0


def _connect(path: Path) -> Callable[[], sqlite3.Connection]:
    def connect() -> sqlite3.Connection:
        conn = sqlite3.connect(path, isolation_level=None, check_same_thread=False)
        conn.execute("PRAGMA journal_mode = WAL")
        conn.execute("CREATE TABLE IF NOT EXISTS t (k INTEGER PRIMARY KEY, v TEXT)")
        return conn

    return connect


def _rows(path: Path) -> list[tuple[int, str]]:
    conn = sqlite3.connect(path)
    try:
        return list(conn.execute("SELECT k, v FROM t ORDER BY k"))
    finally:
        conn.close()


def insert(k: int, v: str = "x") -> Callable[[sqlite3.Connection, Batch], int]:
    def op(conn: sqlite3.Connection, batch: Batch) -> int:
        conn.execute("INSERT INTO t (k, v) VALUES (?, ?)", (k, v))
        return k

    return op


@contextlib.asynccontextmanager
async def held(
    submit: Callable[[Callable[[sqlite3.Connection, Batch], None]], Any],
) -> AsyncIterator[None]:
    """Keep the writer busy inside one operation until the block ends."""
    entered, release = threading.Event(), threading.Event()

    def block(conn: sqlite3.Connection, batch: Batch) -> None:
        entered.set()
        release.wait(10)

    blocker = submit(block)
    assert await asyncio.to_thread(entered.wait, 10), "the writer never took the blocker"
    try:
        yield
    finally:
        release.set()
        await blocker


@pytest.fixture
def writer(tmp_path: Path) -> Iterator[GroupCommitWriter]:
    instance = GroupCommitWriter(_connect(tmp_path / "gc.db"), translate=lambda exc: exc)
    instance.start()
    try:
        yield instance
    finally:
        instance.stop()


async def test_queued_operations_share_one_transaction(
    writer: GroupCommitWriter, tmp_path: Path
) -> None:
    futures: list[Awaitable[int]] = []
    async with held(writer.submit):
        futures = [writer.submit(insert(k)) for k in range(50)]
    assert await asyncio.gather(*futures) == list(range(50))
    assert (writer.batches, writer.operations) == (2, 51)  # the blocker's batch, then one more
    assert len(_rows(tmp_path / "gc.db")) == 50


async def test_a_refused_operation_fails_alone(writer: GroupCommitWriter, tmp_path: Path) -> None:
    def refuse(conn: sqlite3.Connection, batch: Batch) -> None:
        raise RunNotFound("no run 'x'", run_id="x")

    async with held(writer.submit):
        futures: list[asyncio.Future[Any]] = [
            writer.submit(insert(1)),
            writer.submit(refuse),
            writer.submit(insert(2)),
        ]
    outcomes = await asyncio.gather(*futures, return_exceptions=True)
    assert outcomes[0] == 1
    assert outcomes[2] == 2
    assert isinstance(outcomes[1], RunNotFound)
    assert writer.batches == 2  # no retry was needed: the batch committed as one
    assert _rows(tmp_path / "gc.db") == [(1, "x"), (2, "x")]


async def test_an_unexpected_error_rolls_back_and_retries_one_by_one(
    writer: GroupCommitWriter, tmp_path: Path
) -> None:
    await writer.submit(insert(7, "first"))
    async with held(writer.submit):
        futures = [
            writer.submit(insert(1)),
            writer.submit(insert(7, "duplicate")),  # IntegrityError in the middle of the batch
            writer.submit(insert(2)),
        ]
    outcomes = await asyncio.gather(*futures, return_exceptions=True)
    assert outcomes[0] == 1
    assert outcomes[2] == 2
    assert isinstance(outcomes[1], sqlite3.IntegrityError)
    assert _rows(tmp_path / "gc.db") == [(1, "x"), (2, "x"), (7, "first")]


async def test_stop_commits_what_was_queued_before_it(tmp_path: Path) -> None:
    writer = GroupCommitWriter(_connect(tmp_path / "gc.db"), translate=lambda exc: exc)
    writer.start()
    futures = [writer.submit(insert(k)) for k in range(5)]
    await asyncio.to_thread(writer.stop)
    assert await asyncio.gather(*futures) == list(range(5))
    assert len(_rows(tmp_path / "gc.db")) == 5


def test_a_failing_connection_fails_start(tmp_path: Path) -> None:
    def connect() -> sqlite3.Connection:
        raise sqlite3.OperationalError("unable to open database file")

    writer = GroupCommitWriter(connect, translate=lambda exc: RuntimeError(f"translated: {exc}"))
    with pytest.raises(RuntimeError, match="translated: unable to open"):
        writer.start()


# -- through the SQLite store ------------------------------------------------------------------


@pytest.fixture
async def sqlite_store(tmp_path: Path) -> AsyncIterator[SQLiteStore]:
    store = SQLiteStore(f"sqlite:///{tmp_path / 'corral.db'}")
    await store.open()
    try:
        yield store
    finally:
        await store.close()


def _hold_store(store: SQLiteStore) -> contextlib.AbstractAsyncContextManager[None]:
    writer = store._writer
    assert writer is not None
    return held(writer.submit)


async def test_a_fenced_write_fails_alone_in_a_shared_batch(sqlite_store: SQLiteStore) -> None:
    store = sqlite_store
    for n in range(3):
        await store.create_run(NewRun(f"r{n}", "wf", "1", "null", T0))
    live = await store.claim_runs(worker_id="w1", limit=2, now=T0, lease_ttl=30)
    [stale] = await store.claim_runs(worker_id="w1", limit=1, now=T0 - 100, lease_ttl=30)
    await store.claim_runs(worker_id="w2", limit=1, now=T0, lease_ttl=30)  # fences `stale`

    def write(run_id: str, epoch: int, seq: int) -> StepWrite:
        return StepWrite(run_id, epoch, seq, "step", f"s{seq}", "succeeded", T0, result="1")

    batches_before = store.group_commit_stats[0]
    async with _hold_store(store):
        futures = [
            *(store.submit_step(write(r.run_id, r.lease_epoch, s)) for r in live for s in (1, 2)),
            store.submit_step(write(stale.run_id, stale.lease_epoch, 1)),
            *(store.submit_step(write(r.run_id, r.lease_epoch, s)) for r in live for s in (3, 4)),
        ]
    outcomes = await asyncio.gather(*futures, return_exceptions=True)
    assert store.group_commit_stats[0] == batches_before + 2  # the blocker's batch and ours
    assert isinstance(outcomes[4], LeaseLost)
    assert [o for i, o in enumerate(outcomes) if i != 4] == [None] * 8
    for run in live:
        assert [s.seq for s in await store.load_journal(run.run_id)] == [1, 2, 3, 4]
    assert await store.load_journal(stale.run_id) == []


async def test_concurrent_writers_share_commits(sqlite_store: SQLiteStore) -> None:
    store = sqlite_store
    for n in range(20):
        await store.create_run(NewRun(f"r{n}", "wf", "1", "null", T0))
    runs = await store.claim_runs(worker_id="w", limit=20, now=T0, lease_ttl=30)
    batches, operations = store.group_commit_stats

    async def steps(run_id: str, epoch: int) -> None:
        for seq in range(1, 11):
            await store.write_step(
                StepWrite(run_id, epoch, seq, "step", "s", "succeeded", T0, result=json.dumps(seq))
            )

    await asyncio.gather(*(steps(r.run_id, r.lease_epoch) for r in runs))
    batches_after, operations_after = store.group_commit_stats
    assert operations_after - operations == 200
    # Twenty runs writing at once: far fewer commits than writes (one per step would be 200).
    assert batches_after - batches <= 100
    for run in runs:
        assert len(await store.load_journal(run.run_id)) == 10
