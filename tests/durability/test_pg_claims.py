"""Claim contention on PostgreSQL: thousands of runnable runs, eight worker processes.

The claim is `FOR UPDATE SKIP LOCKED` in a materialised CTE (Oban's optimisation fence,
RELIABILITY.md): many claimers at once must never take one run twice, never deadlock, never wait
on each other, and must drain the queue. 5,000 runs of one no-op step are inserted in SQL (as a
burst of work arrives), eight workers claim them on a throwaway server whose log we read. Each
run must be claimed exactly once (`claims` = 1), its step executed exactly once (the effect
ledger), every run must succeed within the deadline, and the server log must show no
`deadlock detected`.
"""

from __future__ import annotations

import asyncio
import os
import sqlite3
import time
import uuid
from pathlib import Path
from typing import Any

import pytest

from corral import Corral

from . import pg_server
from .conftest import new_database, new_fleet
from .databases import Database, progress
from .durable_shapes import WORKFLOWS, durable_shape, expected_output
from .harness import Fleet

BIG = bool(os.environ.get("CORRAL_SOAK"))
pytestmark = [
    pytest.mark.slow,
    pytest.mark.timeout(1800 if BIG else 420),
    pytest.mark.skipif(pg_server.available() is not None, reason=str(pg_server.available())),
]
RUNS = int(os.environ.get("CORRAL_CLAIM_RUNS", 20_000 if BIG else 5_000))
WORKERS = 8
CONCURRENCY = 16
DEADLINE = 60.0 + RUNS * 0.04
SHAPE = [{"op": "step", "v": 1}]


async def insert_runs(corral: Corral, database: Database, count: int) -> list[str]:
    """`count` pending runs of `SHAPE`, copied in one statement from one started through the
    API (so every column is what the engine writes)."""
    model = await corral.get_run((await corral.start(durable_shape, {"ops": SHAPE})).run_id)
    run_ids = [model.run_id] + [str(uuid.uuid4()) for _ in range(count - 1)]
    rows = [
        (
            run_id,
            model.tenant,
            model.workflow,
            model.workflow_version,
            model.input,
            model.created_at + index * 1e-6,
        )
        for index, run_id in enumerate(run_ids[1:], 1)
    ]
    database.execute_many(
        "INSERT INTO runs (run_id, tenant, workflow, workflow_version, status, input,"
        " created_at, updated_at) VALUES (?, ?, ?, ?, 'pending', ?, ?, 0)",
        rows,
    )
    assert database.query("SELECT count(*) FROM runs WHERE status = 'pending'")[0][0] == count
    return run_ids


def ledger_counts(ledger: Path) -> tuple[dict[str, int], dict[str, int]]:
    """Step-body executions and tool calls per run."""
    conn = sqlite3.connect(ledger, timeout=30.0)
    try:
        executions = dict(conn.execute("SELECT run_id, count(*) FROM executions GROUP BY run_id"))
        calls = dict(conn.execute("SELECT run_id, count(*) FROM calls GROUP BY run_id"))
    finally:
        conn.close()
    return executions, calls


def executor_pids(ledger: Path) -> dict[int, int]:
    """Step bodies executed per worker process."""
    conn = sqlite3.connect(ledger, timeout=30.0)
    try:
        return dict(conn.execute("SELECT pid, count(*) FROM executions GROUP BY pid"))
    finally:
        conn.close()


@pytest.fixture
def claim_server() -> Any:
    reason = pg_server.available()
    if reason is not None:
        pytest.skip(reason)
    with pg_server.throwaway_server(settings={"log_lock_waits": "on"}) as server:
        yield server


async def test_eight_workers_claim_each_of_5000_runs_exactly_once(
    tmp_path: Path, claim_server: pg_server.PgServer
) -> None:
    server = claim_server
    database = new_database("postgresql", tmp_path, server_url=server.url)
    fleet: Fleet = new_fleet(
        tmp_path / "fleet",
        database=database,
        concurrency=CONCURRENCY,
        poll=0.05,
        max_seconds=DEADLINE + 60,
    )
    try:
        async with Corral(fleet.url, workflows=WORKFLOWS) as corral:
            began = time.monotonic()
            run_ids = await insert_runs(corral, database, RUNS)
            inserted = time.monotonic() - began
            workers = [fleet.spawn() for _ in range(WORKERS)]
            began = time.monotonic()
            while True:
                counts = await corral.store.count_runs()
                if counts["succeeded"] == RUNS:
                    break
                for worker in workers:
                    assert worker.proc.poll() is None, worker.tail()
                if time.monotonic() - began > DEADLINE:
                    fleet.dump_stacks()
                    await asyncio.sleep(1.0)
                    raise AssertionError(
                        f"the queue did not drain in {DEADLINE:.0f}s: {counts}, progress "
                        f"{progress(database)}; logs in {fleet.folder}"
                    )
                await asyncio.sleep(0.2)
            drained = time.monotonic() - began
            for worker in workers:
                assert await fleet.terminate(worker) == 0, worker.tail()
            model = await corral.get_run(run_ids[0])
            assert model.result is not None

        claims = dict(database.query("SELECT claims, count(*) FROM runs GROUP BY claims"))
        results = dict(database.query("SELECT result, count(*) FROM runs GROUP BY result"))
        executions, calls = ledger_counts(fleet.ledger)
        claimers = executor_pids(fleet.ledger)
        log = server.log_text()
        print(
            f"claims: {RUNS} runs inserted in {inserted:.1f}s, drained by {WORKERS} workers in "
            f"{drained:.1f}s ({RUNS / drained:.0f} runs/s); runs per claim count {claims}; "
            f"runs per worker {sorted(claimers.values())}; "
            f"server log: {log.count('ERROR')} ERROR lines, "
            f"{log.count('still waiting for')} lock waits over deadlock_timeout"
        )
        assert claims == {1: RUNS}, f"runs per number of claims: {claims}"
        assert len(results) == 1
        assert set(results) == {model.result}
        assert expected_output(SHAPE) == [8]
        assert len(claimers) == WORKERS, f"runs per worker process: {claimers}"
        assert set(executions) == set(run_ids)
        assert set(executions.values()) == {1}, "a step body ran twice"
        assert set(calls.values()) == {1}, "a tool was called twice"
        assert "deadlock detected" not in log, server.log_tail(60)
        report = fleet.check(deaths={})
        assert report.ok, report.summary()
    finally:
        fleet.close()
