"""Named crash points × workflow shapes, on real worker processes that SIGKILL themselves.

For each shape and each crash point (DBOS's method, RELIABILITY.md): start a few runs, start a
worker armed with `CORRAL_CRASH_AT=point:K` and see it die by SIGKILL, twice (K = 1, then 3, each
on a fresh worker with fresh runs beside the survivors of the last crash); back-date the dead
worker's leases in SQL; recover with an unarmed worker. Every run must end as the crash-free run
of its shape did, the idempotent tool must show each key applied once, no step journaled before a
crash may run again, and an at-most-once step in flight at a crash must stop its run in
`needs_reconciliation` without a second call.

Both backends, the whole matrix: the workers share a SQLite file or a PostgreSQL schema (fresh
per test, dropped after), and the leases are back-dated in SQL on either. The crash-free
baseline is on SQLite (results compare across databases).
"""

from __future__ import annotations

import asyncio
import json
import sqlite3
from collections import Counter
from pathlib import Path
from typing import Any

import pytest

from corral import Corral
from corral.engine.crashpoints import CRASH_POINTS, CrashPoint

from . import effect_ledger
from .conftest import BACKENDS, new_fleet
from .databases import Database, backdate_leases
from .durable_shapes import SHAPES, WORKFLOWS, durable_shape, expected_output
from .harness import Fleet, SignalSender, all_settled

pytestmark = pytest.mark.slow

RUNS_PER_CRASH = 3
CRASH_PASSES = (1, 3)
BASELINE_RUNS = 2
TIMEOUT = 30.0
# Fewer slots than the children shape has runs: workers run full, parents wait beside children.
CONCURRENCY = 4

Outcome = tuple[str, Any]


async def start_runs(corral: Corral, shape: str, count: int) -> list[str]:
    return [
        (await corral.start(durable_shape, {"ops": SHAPES[shape]})).run_id for _ in range(count)
    ]


async def outcome(corral: Corral, run_id: str) -> Outcome:
    run = await corral.get_run(run_id)
    return run.status, json.loads(run.result) if run.result is not None else None


async def drain(
    fleet: Fleet, corral: Corral, signals: SignalSender, *, crash_at: str | None
) -> int:
    """One worker process until it dies or every run is settled (then it gets SIGTERM)."""
    worker = fleet.spawn(crash_at=crash_at)
    code = await fleet.wait_exit(
        worker, timeout=TIMEOUT, until=lambda: all_settled(corral), each_poll=signals.send_due
    )
    if crash_at is not None:
        assert code == -9, (
            f"worker armed with {crash_at} exited with {code} instead of SIGKILL (did every run "
            f"settle before the K-th pass?); its log:\n{worker.tail()}"
        )
    else:
        assert code == 0, f"recovery worker exited with {code}; its log:\n{worker.tail()}"
    return code


def journaled_tool_keys(db: Database) -> set[str]:
    """Idempotency keys of tool steps whose outcome is committed."""
    rows = db.query("SELECT run_id, seq FROM steps WHERE kind = 'step' AND status != 'started'")
    return {f"{run_id}:{seq}" for run_id, seq in rows}


def at_most_once_in_flight(db: Database) -> set[str]:
    """Runs whose at-most-once step has an intent and no outcome: in flight at the crash."""
    rows = db.query("SELECT run_id FROM steps WHERE at_most_once = 1 AND status = 'started'")
    return {row[0] for row in rows}


def calls_by_key(ledger: Path, kind: effect_ledger.ToolKind | None = None) -> Counter[str]:
    conn = sqlite3.connect(ledger, timeout=30.0)
    try:
        rows = conn.execute("SELECT idempotency_key, kind FROM calls").fetchall()
    finally:
        conn.close()
    return Counter(key for key, call_kind in rows if kind is None or call_kind == kind)


@pytest.fixture(scope="module")
def crash_free(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Outcome]:
    """How each shape ends without a crash, on a real worker process."""
    fleet = new_fleet(tmp_path_factory.mktemp("crash-free"), concurrency=CONCURRENCY)

    async def go() -> dict[str, Outcome]:
        async with Corral(fleet.url, workflows=WORKFLOWS) as corral:
            runs = {shape: await start_runs(corral, shape, BASELINE_RUNS) for shape in SHAPES}
            await drain(fleet, corral, SignalSender(corral), crash_at=None)
            outcomes: dict[str, Outcome] = {}
            for shape, run_ids in runs.items():
                seen = [await outcome(corral, run_id) for run_id in run_ids]
                assert all(o == seen[0] for o in seen), f"{shape}: crash-free runs differ: {seen}"
                outcomes[shape] = seen[0]
            return outcomes

    try:
        outcomes = asyncio.run(go())
    finally:
        fleet.close()
    for shape, (status, result) in outcomes.items():
        assert status == "succeeded", f"{shape} did not succeed without a crash"
        assert result == expected_output(SHAPES[shape]), shape
    report = fleet.check(deaths={})
    assert report.ok, report.summary()
    return outcomes


# Every shape × every point on both backends: about 3 s a case, 45 s per backend on 2 cores.
MATRIX = [
    pytest.param(shape, point, backend, id=f"{shape}-{point}-{backend}")
    for backend in BACKENDS
    for shape in SHAPES
    for point in CRASH_POINTS
]


@pytest.mark.parametrize(("shape", "point", "backend"), MATRIX)
async def test_crash_point_then_recover(
    shape: str, point: CrashPoint, make_fleet: Any, crash_free: dict[str, Outcome]
) -> None:
    fleet: Fleet = make_fleet(concurrency=CONCURRENCY)
    run_ids: list[str] = []
    reconcile: set[str] = set()
    calls_at_crash: dict[str, int] = {}
    async with Corral(fleet.url, workflows=WORKFLOWS) as corral:
        signals = SignalSender(corral)
        for passes in CRASH_PASSES:
            # Fresh runs beside the survivors, so the K-th pass is always reached.
            run_ids += await start_runs(corral, shape, RUNS_PER_CRASH)
            await drain(fleet, corral, signals, crash_at=f"{point}:{passes}")
            reconcile |= at_most_once_in_flight(fleet.database)
            calls = calls_by_key(fleet.ledger)
            for key in journaled_tool_keys(fleet.database):
                calls_at_crash.setdefault(key, calls[key])
            # The dead worker held at least the run it died in; its lease expires now (in SQL).
            assert backdate_leases(fleet.database) >= 1
        await drain(fleet, corral, signals, crash_at=None)

        for run_id in run_ids:
            got = await outcome(corral, run_id)
            if run_id in reconcile:
                assert got[0] == "needs_reconciliation", (
                    f"run {run_id}: its at-most-once step was in flight at a crash, yet it "
                    f"ended {got}"
                )
            else:
                assert got == crash_free[shape], f"run {run_id} ended {got}"

    report = fleet.check(expect_succeeded=not reconcile)
    assert report.ok, report.summary()

    # DBOS's counter check: a step whose outcome was committed before a crash never runs again.
    calls = calls_by_key(fleet.ledger)
    rerun = {key: (n, calls[key]) for key, n in calls_at_crash.items() if calls[key] != n}
    assert not rerun, f"steps journaled before a crash ran again (calls then, now): {rerun}"

    at_most_once = calls_by_key(fleet.ledger, "at_most_once")
    assert all(n == 1 for n in at_most_once.values()), at_most_once
    if shape == "at_most_once":
        succeeded = set(run_ids) - reconcile
        assert {key.rsplit(":", 1)[0] for key in at_most_once} >= succeeded
        if point in ("step.after_dispatch", "step.after_effect"):
            # The first pass of these points is inside an at-most-once step.
            assert reconcile, "no at-most-once step was caught in flight"
    elif point == "step.after_effect":
        # Each crash hit after an effect and before its journal entry: the tool saw a second
        # call with the same key, and deduplicated it.
        assert report.redelivered_keys >= len(CRASH_PASSES), report.summary()


async def test_finished_runs_set_back_to_pending_replay_without_running_a_step(
    make_fleet: Any,
) -> None:
    """DBOS's recovery by journal mutation: every finished run (children included) is set back
    to pending in SQL; recovering them must replay every step from the journal, run none again,
    and end each run as before."""
    fleet: Fleet = make_fleet(concurrency=CONCURRENCY)
    async with Corral(fleet.url, workflows=WORKFLOWS) as corral:
        signals = SignalSender(corral)
        run_ids = {shape: (await start_runs(corral, shape, 1))[0] for shape in SHAPES}
        await drain(fleet, corral, signals, crash_at=None)
        before = {shape: await outcome(corral, run_id) for shape, run_id in run_ids.items()}
        calls_before = calls_by_key(fleet.ledger)

        reset = fleet.database.execute(
            "UPDATE runs SET status = 'pending', result = NULL, error = NULL,"
            " lease_owner = NULL, lease_expires_at = NULL, wake_at = NULL"
        )
        assert reset > len(SHAPES)  # the roots and their children

        await drain(fleet, corral, signals, crash_at=None)
        after = {shape: await outcome(corral, run_id) for shape, run_id in run_ids.items()}

    assert after == before
    assert all(status == "succeeded" for status, _ in after.values()), after
    assert calls_by_key(fleet.ledger) == calls_before
    assert set(calls_before.values()) == {1}, "each step ran once, before the reset"
    report = fleet.check(deaths={})
    assert report.ok, report.summary()
