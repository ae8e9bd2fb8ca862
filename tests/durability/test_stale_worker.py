"""A worker frozen past its lease (SIGSTOP) and thawed after another took its runs over.

RELIABILITY.md, after Procrastinate, Oban and graphile-worker: freeze a worker in the middle of
its steps, back-date its leases, let a second worker finish every run, then SIGCONT the first.
The thawed worker finishes the step bodies it was in (a paused process cannot be stopped from
doing that: its tool calls happen, and the idempotency key makes them harmless), but every
write it then makes to Corral's database must be refused: nothing in the journal or the runs may
change after the thaw.
"""

from __future__ import annotations

import asyncio
import json
import os
import signal
import sqlite3
import time
from pathlib import Path
from typing import Any

import pytest

from corral import Corral

from .databases import backdate_leases, last_write
from .durable_shapes import WORKFLOWS, durable_shape, expected_output
from .harness import Fleet, all_settled

pytestmark = pytest.mark.slow

RUNS = 3
SHAPE = [{"op": "step", "v": v} for v in (1, 2, 3)]
STEP_SECONDS = 0.8
"""A tool body sleeps half of this before its call and half after."""


def open_executions(ledger: Path, pid: int) -> int:
    conn = sqlite3.connect(ledger, timeout=30.0)
    try:
        return int(
            conn.execute(
                "SELECT count(*) FROM executions WHERE pid = ? AND ended_at IS NULL", (pid,)
            ).fetchone()[0]
        )
    finally:
        conn.close()


def calls_since(ledger: Path, pid: int, since: float) -> int:
    conn = sqlite3.connect(ledger, timeout=30.0)
    try:
        return int(
            conn.execute(
                "SELECT count(*) FROM calls WHERE pid = ? AND at >= ?", (pid, since)
            ).fetchone()[0]
        )
    finally:
        conn.close()


async def test_a_thawed_worker_changes_nothing_after_its_runs_were_taken_over(
    make_fleet: Any,
) -> None:
    fleet: Fleet = make_fleet(concurrency=8, tool_delay=(STEP_SECONDS, STEP_SECONDS))
    async with Corral(fleet.url, workflows=WORKFLOWS) as corral:
        run_ids = [(await corral.start(durable_shape, {"ops": SHAPE})).run_id for _ in range(RUNS)]
        frozen = fleet.spawn()
        try:
            deadline = time.monotonic() + 30
            while open_executions(fleet.ledger, frozen.pid) < RUNS:
                assert time.monotonic() < deadline, f"no steps started:\n{frozen.tail()}"
                assert frozen.proc.poll() is None, frozen.tail()
                await asyncio.sleep(0.01)
            # Every run is inside its first step's body, before the tool call: no write of this
            # worker is in flight, to Corral's database or to the ledger.
            await asyncio.sleep(0.05)
            os.kill(frozen.pid, signal.SIGSTOP)
            assert calls_since(fleet.ledger, frozen.pid, 0.0) == 0
            assert backdate_leases(fleet.database) == RUNS

            rescuer = fleet.spawn()
            code = await fleet.wait_exit(rescuer, timeout=30, until=lambda: all_settled(corral))
            assert code == 0, rescuer.tail()
            outcomes = [await corral.get_run(run_id) for run_id in run_ids]
            settled_at = last_write(fleet.database)
        finally:
            thawed_at = time.time()
            os.kill(frozen.pid, signal.SIGCONT)

        # The thawed steps end at once (their sleep is over), call the tool, and try to write.
        deadline = time.monotonic() + 10
        while calls_since(fleet.ledger, frozen.pid, thawed_at) < RUNS:
            assert time.monotonic() < deadline, f"thawed worker made no calls:\n{frozen.tail()}"
            await asyncio.sleep(0.05)
        await asyncio.sleep(STEP_SECONDS * 2)  # time for its writes, renewals and next steps
        code = await fleet.terminate(frozen)
        assert code == 0, frozen.tail()
        stats = json.loads(frozen.tail(1))

    assert last_write(fleet.database) == settled_at, "a stale worker's write was accepted"
    for run in outcomes:
        assert run.status == "succeeded", run
        assert json.loads(run.result or "null") == expected_output(SHAPE)
    # Each of its executions tried to journal its step's result and was refused.
    assert stats["outcomes"] == {"lease_lost": RUNS}, stats
    report = fleet.check(deaths={})
    # The frozen executor overlapped its successor by design (that is what fencing is for);
    # nothing else may be wrong, and every overlap is the frozen worker's.
    assert {o.first[0] for o in report.overlaps} == {frozen.pid}, report.summary()
    assert len(report.overlaps) == RUNS
    report.overlaps.clear()
    assert report.ok, report.summary()
    assert report.redelivered_keys == RUNS  # the thawed calls, deduplicated by key
