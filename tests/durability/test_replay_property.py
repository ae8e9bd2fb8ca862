"""Property: a run crashed at any step and resumed ends exactly as an uninterrupted run does.

Hypothesis draws a workflow shape (sequences, fan-outs, child runs, timers, signals: see
`durable_shapes`) and a step body at which to crash. The crash is simulated in-process: that body
hangs, the worker's run tasks and its main task are cancelled where they stand (nothing written on
the way out, as with SIGKILL; writes already handed to the store may still commit, as a commit in
flight at a kill may), and the `Corral` is abandoned. A new `Corral` on the same file, with the
dead worker's leases back-dated in SQL, resumes the run. Its result must equal an uninterrupted run
of the same shape in another database (and the oracle), and no step whose outcome was journaled
before the crash may execute again. Timers run on a FakeClock; the test sends each awaited signal.
"""

from __future__ import annotations

import asyncio
import json
import os
import sqlite3
import tempfile
from collections import Counter
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Literal

from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from corral import Corral, StepInfo
from corral.testing import FakeClock

from .durable_shapes import Op, count_tool_steps, durable_shape, expected_output, hooks
from .harness import SignalSender, backdate_leases, sqlite_url

CrashMode = Literal["before_effect", "after_effect"]
MAX_ROUNDS = 200
MAX_EXAMPLES = 500 if os.environ.get("CORRAL_SOAK") else 40


class Probe:
    """Counts step-body executions per (run_id, seq); the `crash_at`-th body hangs for ever."""

    def __init__(self, crash_at: int | None = None, mode: CrashMode = "before_effect") -> None:
        self.counts: Counter[tuple[str, int]] = Counter()
        self.crash_at = crash_at
        self.mode = mode
        self.bodies = 0
        self.crashed = asyncio.Event()

    async def on_step(self, info: StepInfo, label: str) -> None:
        self.bodies += 1
        key = (info.run_id, info.seq)
        if self.bodies == self.crash_at:
            if self.mode == "after_effect":
                self.counts[key] += 1
            self.crashed.set()
            await asyncio.Event().wait()  # until the crash cancels this task
        self.counts[key] += 1


async def drive(
    corral: Corral, clock: FakeClock, root_id: str, probe: Probe, sent: SignalSender
) -> bool:
    """Work until the root run settles (True) or the probe crashes the worker (False)."""
    for _ in range(MAX_ROUNDS):
        worker = corral.worker(concurrency=64)
        working = asyncio.create_task(worker.run(until_idle=True))
        crashing = asyncio.create_task(probe.crashed.wait())
        await asyncio.wait({working, crashing}, return_when=asyncio.FIRST_COMPLETED)
        crashing.cancel()
        await asyncio.gather(crashing, return_exceptions=True)
        if probe.crashed.is_set():
            # The process dies here: every run task stops where it stands, then the worker.
            for run_id in worker.active_runs:
                worker.drop(run_id)
            working.cancel()
            await asyncio.gather(working, return_exceptions=True)
            return False
        await working
        run = await corral.get_run(root_id)
        if run.finished or run.status == "needs_reconciliation":
            return True
        if await sent.send_due():
            continue
        wake_at = await corral.store.next_wake_at()
        assert wake_at is not None, f"run {root_id} is {run.status} with nothing to wake it"
        clock.advance(max(wake_at - clock.now(), 0.0))
    raise AssertionError(f"run {root_id} did not settle in {MAX_ROUNDS} rounds")


def journaled_steps(db: Path) -> set[tuple[str, int]]:
    conn = sqlite3.connect(db)
    try:
        rows = conn.execute(
            "SELECT run_id, seq FROM steps WHERE kind = 'step' AND status = 'succeeded'"
        ).fetchall()
    finally:
        conn.close()
    return {(run_id, seq) for run_id, seq in rows}


async def run_through(db: Path, ops: list[Op]) -> tuple[str, Any]:
    """The uninterrupted run of `ops`."""
    clock = FakeClock()
    probe = Probe()
    hooks.on_step = probe.on_step
    async with Corral(sqlite_url(db), clock=clock, workflows=[durable_shape]) as corral:
        handle = await corral.start(durable_shape, {"ops": ops})
        assert await drive(corral, clock, handle.run_id, probe, SignalSender(corral))
        run = await corral.get_run(handle.run_id)
    assert all(n == 1 for n in probe.counts.values()), probe.counts
    return run.status, json.loads(run.result or "null")


@dataclass(frozen=True)
class CrashOutcome:
    status: str
    result: Any
    journaled_at_crash: set[tuple[str, int]]
    before: Counter[tuple[str, int]]
    after: Counter[tuple[str, int]]
    statuses: set[str]


async def crash_and_resume(db: Path, ops: list[Op], crash_at: int, mode: CrashMode) -> CrashOutcome:
    clock = FakeClock()
    sent: SignalSender | None = None
    before = Probe(crash_at, mode)
    hooks.on_step = before.on_step
    corral = Corral(sqlite_url(db), clock=clock, workflows=[durable_shape])
    await corral.open()
    try:
        root_id = (await corral.start(durable_shape, {"ops": ops})).run_id
        sent = SignalSender(corral)
        settled = await drive(corral, clock, root_id, before, sent)
        assert not settled, f"the crash at body {crash_at} never came ({before.bodies} bodies)"
    finally:
        await corral.close()
    journaled = journaled_steps(db)
    backdate_leases(db)

    after = Probe()
    hooks.on_step = after.on_step
    async with Corral(sqlite_url(db), clock=clock, workflows=[durable_shape]) as corral:
        # The outside world remembers which signals it sent before the crash.
        sent.corral = corral
        assert await drive(corral, clock, root_id, after, sent)
        run = await corral.get_run(root_id)
        statuses: set[str] = {r.status for r in await corral.list_runs(limit=1000)}
    return CrashOutcome(
        run.status,
        json.loads(run.result or "null"),
        journaled,
        before.counts,
        after.counts,
        statuses,
    )


# -- shapes ------------------------------------------------------------------------------------

values = st.integers(0, 99)
leaf_ops = st.one_of(
    st.builds(lambda v: {"op": "step", "v": v}, values),
    st.builds(lambda vs: {"op": "fanout", "vs": vs}, st.lists(values, min_size=2, max_size=3)),
    st.builds(lambda s: {"op": "sleep", "s": s}, st.sampled_from([1.0, 60.0, 3600.0])),
    st.builds(lambda name: {"op": "signal", "name": name}, st.sampled_from(["a", "b"])),
)
child_shapes = st.lists(leaf_ops, min_size=1, max_size=3)
ops_lists = st.lists(
    st.one_of(
        leaf_ops,
        leaf_ops,
        st.builds(lambda ops: {"op": "child", "ops": ops}, child_shapes),
        st.builds(
            lambda shapes: {"op": "children", "shapes": shapes},
            st.lists(child_shapes, min_size=2, max_size=2),
        ),
    ),
    min_size=1,
    max_size=6,
).filter(lambda ops: count_tool_steps(ops) > 0)


@st.composite
def crash_cases(draw: st.DrawFn) -> tuple[list[Op], int, CrashMode]:
    ops = draw(ops_lists)
    crash_at = draw(st.integers(1, count_tool_steps(ops)))
    mode: CrashMode = draw(st.sampled_from(["before_effect", "after_effect"]))
    return ops, crash_at, mode


@settings(max_examples=MAX_EXAMPLES, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(case=crash_cases())
def test_a_crashed_run_resumes_to_the_uninterrupted_result(
    case: tuple[list[Op], int, CrashMode],
) -> None:
    ops, crash_at, mode = case
    try:
        with tempfile.TemporaryDirectory(prefix="corral-replay-") as folder:
            uninterrupted = asyncio.run(run_through(Path(folder) / "clean.db", ops))
            crashed = asyncio.run(
                crash_and_resume(Path(folder) / "crashed.db", ops, crash_at, mode)
            )
    finally:
        hooks.on_step = None

    assert uninterrupted == ("succeeded", expected_output(ops))
    assert (crashed.status, crashed.result) == uninterrupted
    assert crashed.statuses == {"succeeded"}, "every child run succeeded too"
    rerun = {key for key in crashed.journaled_at_crash if crashed.after[key]}
    assert not rerun, f"steps journaled before the crash executed again: {sorted(rerun)}"
    for key, count in (crashed.before + crashed.after).items():
        # Only a step in flight at the crash (its outcome not journaled) may run twice.
        assert count == 1 or key not in crashed.journaled_at_crash, key
