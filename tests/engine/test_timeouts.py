"""Layered timeouts in the engine: a step's own timeout and the run's deadline, on virtual time.

A hanging body never holds its run past the limit: it is abandoned (even one that ignores
cancellation), the timeout is journaled, and the run moves on.
"""

from __future__ import annotations

import asyncio
import json

import pytest

from corral import Corral, RunContext, SignalTimeout
from corral.errors import StepFailed
from corral.testing import FakeClock

from .harness import error_of


@pytest.fixture
def lease_ttl() -> float:
    """A lease that outlasts every clock jump below.

    These tests jump the clock past a step's timeout in one `advance` while the step is in
    flight. With the usual 30 s lease that jump also lapses the worker's own lease, and if its
    next claim reaches the database before its heartbeat and the step's timeout, the worker
    takes its run back and starts the hung step again, which then waits for another jump that
    never comes (a CI flake: test_a_hung_step_does_not_block_other_runs). A real clock never
    skips a heartbeat like that; lease expiry has tests of its own (test_leases.py).
    """
    return 3600.0


async def _hang(started: asyncio.Event, *, stubborn: bool = False) -> str:
    started.set()
    try:
        await asyncio.Event().wait()
    except asyncio.CancelledError:
        if not stubborn:
            raise
        # A badly behaved body that swallows its cancellation and carries on for a while: the
        # run does not wait for it.
        await asyncio.sleep(0.2)
    return "too late"


async def test_a_hanging_step_is_abandoned_at_its_timeout(corral: Corral, clock: FakeClock) -> None:
    started = asyncio.Event()

    @corral.workflow
    async def slow(ctx: RunContext, _: None) -> str:
        try:
            return await ctx.step(_hang, started, stubborn=True, name="lookup", timeout=30)
        except StepFailed as exc:
            return f"gave up: {exc.ids['error_type']}"

    handle = await corral.start(slow)
    worker = asyncio.create_task(corral.run_until_idle())
    await asyncio.wait_for(started.wait(), 5)
    clock.advance(29)
    await asyncio.sleep(0.01)
    assert not worker.done()  # still within its 30 s
    clock.advance(1)
    await asyncio.wait_for(worker, 5)
    assert await handle.wait_for_result(timeout=5) == "gave up: StepTimeout"
    [row] = await corral.journal(handle.run_id)
    error = json.loads(row.error or "{}")
    assert (row.status, error["code"], error["timeout"]) == ("failed", "step_timeout", 30)
    assert "did not finish within 30s" in error["message"]


async def test_a_hung_step_does_not_block_other_runs(corral: Corral, clock: FakeClock) -> None:
    started = asyncio.Event()

    @corral.workflow
    async def stuck(ctx: RunContext, _: None) -> str:
        return await ctx.step(_hang, started, name="hang", timeout=60)

    async def quick() -> str:
        return "done"

    @corral.workflow
    async def fine(ctx: RunContext, n: int) -> str:
        return await ctx.step(quick, name="quick") + str(n)

    hung = await corral.start(stuck)
    worker = asyncio.create_task(corral.run_until_idle())
    await asyncio.wait_for(started.wait(), 5)
    others = [await corral.start(fine, n) for n in range(5)]
    results = [await h.wait_for_result(timeout=5) for h in others]  # while `hung` hangs
    assert results == [f"done{n}" for n in range(5)]
    assert (await hung.get()).status == "running"
    clock.advance(60)
    await asyncio.wait_for(worker, 5)
    assert error_of(await hung.get())["code"] == "step_failed"


async def test_the_run_deadline_fails_a_waiting_run(corral: Corral, clock: FakeClock) -> None:
    """A run waiting for a human wakes at its deadline and fails with it, journaled."""

    @corral.workflow(timeout=3600)
    async def approve(ctx: RunContext, _: None) -> str:
        try:
            return str(await ctx.wait_for_signal("decision", timeout=86_400))
        except SignalTimeout:
            return "no answer"

    handle = await corral.start(approve)
    await corral.run_until_idle()
    run = await handle.get()
    assert run.wake_at == run.created_at + 3600  # not the day-long signal timeout
    clock.advance(3600)
    await corral.run_until_idle()
    run = await handle.get()
    assert run.status == "failed"
    error = error_of(run)
    assert error["code"] == "deadline_exceeded"
    assert error["deadline"] == run.created_at + 3600
    [row] = await corral.journal(handle.run_id)
    assert (row.kind, row.status) == ("signal", "failed")
    assert json.loads(row.error or "{}")["code"] == "deadline_exceeded"


async def test_the_run_deadline_bounds_a_step_in_flight(corral: Corral, clock: FakeClock) -> None:
    started = asyncio.Event()

    @corral.workflow(timeout=100)
    async def bounded(ctx: RunContext, _: None) -> str:
        return await ctx.step(_hang, started, name="hang", timeout=1000)

    handle = await corral.start(bounded)
    worker = asyncio.create_task(corral.run_until_idle())
    await asyncio.wait_for(started.wait(), 5)
    clock.advance(100)
    await asyncio.wait_for(worker, 5)
    run = await handle.get()
    assert run.status == "failed"
    [row] = await corral.journal(handle.run_id)
    assert json.loads(row.error or "{}")["code"] == "deadline_exceeded"


async def test_a_passed_deadline_replays_as_the_same_failure(
    corral: Corral, clock: FakeClock
) -> None:
    """The deadline is journaled at the step it stopped; code catching it and trying a step
    again meets the same deadline, and a replay decides the same way."""
    calls: list[int] = []

    async def work() -> int:
        calls.append(1)
        return len(calls)

    @corral.workflow(timeout=10)
    async def late(ctx: RunContext, _: None) -> int:
        first = await ctx.step(work, name="first")
        await ctx.sleep(20)
        return first + await ctx.step(work, name="second")

    handle = await corral.start(late)
    await corral.run_until_idle()
    assert (await handle.get()).wake_at == (await handle.get()).created_at + 10
    clock.advance(20)
    await corral.run_until_idle()
    run = await handle.get()
    assert error_of(run)["code"] == "deadline_exceeded"
    assert calls == [1]
    names = [(row.name, row.status) for row in await corral.journal(handle.run_id)]
    assert names == [("first", "succeeded"), ("sleep", "failed")]


def test_a_workflow_timeout_must_be_positive(corral: Corral) -> None:
    from corral.errors import UsageError

    async def flow(ctx: RunContext, _: None) -> None:
        return None

    with pytest.raises(UsageError, match="timeout must be a positive number of seconds"):
        corral.workflow(timeout=0)(flow)
