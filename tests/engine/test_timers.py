"""Durable timers: a sleeping run is parked in the store and wakes on virtual time."""

from __future__ import annotations

import asyncio
import json

from corral import Corral, RunContext
from corral.testing import FakeClock

from .harness import Calls


async def test_sleep_parks_the_run_until_its_time(corral: Corral, clock: FakeClock) -> None:
    calls = Calls()

    async def remind() -> str:
        calls.hit("remind")
        return "reminded"

    @corral.workflow
    async def reminder(ctx: RunContext, _: None) -> str:
        await ctx.sleep(3600)
        return await ctx.step(remind, name="remind")

    start = clock.now()
    handle = await corral.start(reminder)
    stats = await corral.run_until_idle()
    assert stats.outcomes == {"waiting": 1}

    run = await handle.get()
    assert run.status == "waiting"
    assert run.wake_at == start + 3600
    assert run.lease_owner is None
    assert await corral.store.next_wake_at() == start + 3600
    [timer] = await corral.journal(handle.run_id)
    assert (timer.kind, timer.status) == ("sleep", "started")
    assert json.loads(timer.detail or "{}") == {"seconds": 3600, "wake_at": start + 3600}

    clock.advance(3599)  # not yet
    assert not await corral.store.has_runnable(now=clock.now())
    assert (await corral.run_until_idle()).claimed == 0
    assert calls["remind"] == 0

    clock.advance(1)
    await corral.run_until_idle()
    assert await handle.wait_for_result(timeout=5) == "reminded"
    assert calls["remind"] == 1
    timer, _ = await corral.journal(handle.run_id)
    assert timer.status == "succeeded"
    assert json.loads(timer.detail or "{}")["wake_at"] == start + 3600  # kept on completion


async def test_timer_deadline_is_kept_across_replays(corral: Corral, clock: FakeClock) -> None:
    """A run woken early (here by a signal it does not wait for) sleeps until the old deadline."""

    @corral.workflow
    async def napper(ctx: RunContext, _: None) -> str:
        await ctx.sleep(100)
        return "rested"

    start = clock.now()
    handle = await corral.start(napper)
    await corral.run_until_idle()

    clock.advance(40)
    await corral.signal(handle.run_id, "poke")
    assert (await handle.get()).wake_at == start + 40
    stats = await corral.run_until_idle()
    assert stats.outcomes == {"waiting": 1}  # replayed, then parked again

    run = await handle.get()
    assert run.status == "waiting"
    assert run.wake_at == start + 100  # not start + 40 + 100

    clock.advance(60)
    await corral.run_until_idle()
    assert await handle.wait_for_result(timeout=5) == "rested"


async def test_zero_sleep_does_not_park(corral: Corral) -> None:
    @corral.workflow
    async def flow(ctx: RunContext, _: None) -> str:
        await ctx.sleep(0)
        return "awake"

    handle = await corral.start(flow)
    stats = await corral.run_until_idle()
    assert stats.outcomes == {"succeeded": 1}
    assert await handle.wait_for_result(timeout=5) == "awake"


async def test_parallel_timers_wake_the_run_at_the_earliest(
    corral: Corral, clock: FakeClock
) -> None:
    @corral.workflow
    async def flow(ctx: RunContext, _: None) -> str:
        await asyncio.gather(ctx.sleep(10), ctx.sleep(20))
        return "both"

    start = clock.now()
    handle = await corral.start(flow)
    await corral.run_until_idle()
    assert (await handle.get()).wake_at == start + 10

    clock.advance(10)
    await corral.run_until_idle()
    run = await handle.get()
    assert (run.status, run.wake_at) == ("waiting", start + 20)

    clock.advance(10)
    await corral.run_until_idle()
    assert await handle.wait_for_result(timeout=5) == "both"
    journal = await corral.journal(handle.run_id)
    assert [(s.seq, s.kind, s.status) for s in journal] == [
        (1, "sleep", "succeeded"),
        (2, "sleep", "succeeded"),
    ]


async def test_many_sleeping_runs_wake_in_one_pass(corral: Corral, clock: FakeClock) -> None:
    @corral.workflow
    async def flow(ctx: RunContext, n: int) -> int:
        await ctx.sleep(60 + n)
        return n

    handles = [await corral.start(flow, n) for n in range(20)]
    await corral.run_until_idle()
    assert len(await corral.list_runs(status="waiting")) == 20

    clock.advance(80)
    await corral.run_until_idle(concurrency=4)
    assert [await h.wait_for_result(timeout=5) for h in handles] == list(range(20))
