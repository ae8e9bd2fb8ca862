"""Signals: data sent to a run from outside, buffered until the run waits for it."""

from __future__ import annotations

import pytest
from pydantic import BaseModel

from corral import (
    Corral,
    NotSerializable,
    RunAlreadyFinished,
    RunContext,
    RunNotFound,
    SignalTimeout,
)
from corral.testing import FakeClock

from .harness import Calls


class Approval(BaseModel):
    approved: bool
    by: str


async def test_signal_sent_before_the_wait_is_buffered(corral: Corral) -> None:
    @corral.workflow
    async def gate(ctx: RunContext, _: None) -> object:
        return await ctx.wait_for_signal("approve")

    handle = await corral.start(gate)
    await corral.signal(handle.run_id, "approve", {"ok": True})
    stats = await corral.run_until_idle()
    assert stats.outcomes == {"succeeded": 1}  # never had to wait
    assert await handle.wait_for_result(timeout=5) == {"ok": True}
    [signal] = await corral.store.list_signals(handle.run_id)
    assert signal.consumed_seq == 1


async def test_signal_sent_after_the_wait_wakes_the_run(corral: Corral, clock: FakeClock) -> None:
    calls = Calls()

    async def ship(approval: Approval) -> str:
        calls.hit("ship")
        return f"shipped, approved by {approval.by}"

    @corral.workflow
    async def gate(ctx: RunContext, _: None) -> str:
        approval = await ctx.wait_for_signal("approve", type_=Approval)
        assert isinstance(approval, Approval)
        return await ctx.step(ship, approval, name="ship")

    handle = await corral.start(gate)
    await corral.run_until_idle()
    run = await handle.get()
    assert (run.status, run.wake_at) == ("waiting", None)  # waits for an event, not a time
    assert not await corral.store.has_runnable(now=clock.now() + 10**6)

    await corral.signal(handle.run_id, "approve", Approval(approved=True, by="grace"))
    assert (await handle.get()).wake_at == clock.now()
    await corral.run_until_idle()
    assert await handle.wait_for_result(timeout=5) == "shipped, approved by grace"
    assert calls["ship"] == 1
    [wait, _] = await corral.journal(handle.run_id)
    assert (wait.kind, wait.name, wait.status) == ("signal", "approve", "succeeded")


async def test_signals_of_one_name_arrive_in_order(corral: Corral) -> None:
    @corral.workflow
    async def collect(ctx: RunContext, count: int) -> list[object]:
        return [await ctx.wait_for_signal("item") for _ in range(count)]

    handle = await corral.start(collect, 4)
    await corral.signal(handle.run_id, "item", "a")
    await corral.signal(handle.run_id, "other", "ignored")
    await corral.signal(handle.run_id, "item", "b")
    await corral.run_until_idle()
    await corral.signal(handle.run_id, "item", "c")
    await corral.signal(handle.run_id, "item", "d")
    await corral.run_until_idle()

    assert await handle.wait_for_result(timeout=5) == ["a", "b", "c", "d"]
    signals = await corral.store.list_signals(handle.run_id)
    assert [(s.name, s.consumed_seq) for s in signals] == [
        ("item", 1),
        ("other", None),
        ("item", 2),
        ("item", 3),
        ("item", 4),
    ]


async def test_signal_timeout_is_catchable_and_replays_the_same(
    corral: Corral, clock: FakeClock
) -> None:
    timeouts: list[SignalTimeout] = []

    @corral.workflow
    async def gate(ctx: RunContext, _: None) -> str:
        try:
            await ctx.wait_for_signal("approve", timeout=60)
        except SignalTimeout as exc:
            timeouts.append(exc)
        await ctx.sleep(10)
        return "escalated"

    start = clock.now()
    handle = await corral.start(gate)
    await corral.run_until_idle()
    assert (await handle.get()).wake_at == start + 60

    clock.advance(59)
    assert (await corral.run_until_idle()).claimed == 0
    clock.advance(1)
    await corral.run_until_idle()
    assert len(timeouts) == 1

    # A signal arriving after the timeout wakes the run, but the timed-out wait stays timed out.
    await corral.signal(handle.run_id, "approve", True)
    await corral.run_until_idle()
    assert await handle.status() == "waiting"
    clock.advance(10)
    await corral.run_until_idle()

    assert await handle.wait_for_result(timeout=5) == "escalated"
    assert len(timeouts) == 3  # live, then two replays
    for error in timeouts:
        assert error.ids == {"run_id": handle.run_id, "seq": 1, "signal": "approve"}
    wait, _ = await corral.journal(handle.run_id)
    assert (wait.kind, wait.status) == ("signal", "failed")
    [late] = await corral.store.list_signals(handle.run_id)
    assert late.consumed_seq is None


async def test_signal_before_its_deadline_beats_the_timeout(
    corral: Corral, clock: FakeClock
) -> None:
    @corral.workflow
    async def gate(ctx: RunContext, _: None) -> object:
        return await ctx.wait_for_signal("approve", timeout=60)

    handle = await corral.start(gate)
    await corral.run_until_idle()
    clock.advance(30)
    await corral.signal(handle.run_id, "approve", "yes")
    await corral.run_until_idle()
    assert await handle.wait_for_result(timeout=5) == "yes"


async def test_signal_deadline_is_kept_across_replays(corral: Corral, clock: FakeClock) -> None:
    @corral.workflow
    async def gate(ctx: RunContext, _: None) -> str:
        try:
            await ctx.wait_for_signal("approve", timeout=60)
        except SignalTimeout:
            return "timed out"
        return "approved"

    start = clock.now()
    handle = await corral.start(gate)
    await corral.run_until_idle()
    clock.advance(30)
    await corral.signal(handle.run_id, "unrelated")  # wakes the run early
    await corral.run_until_idle()
    assert (await handle.get()).wake_at == start + 60
    clock.advance(30)
    await corral.run_until_idle()
    assert await handle.wait_for_result(timeout=5) == "timed out"


async def test_signal_to_a_finished_run_is_refused(corral: Corral) -> None:
    @corral.workflow
    async def quick(ctx: RunContext, _: None) -> int:
        return 1

    handle = await corral.start(quick)
    await corral.run_until_idle()
    with pytest.raises(RunAlreadyFinished) as info:
        await corral.signal(handle.run_id, "approve", True)
    assert info.value.ids == {"run_id": handle.run_id, "status": "succeeded"}
    assert await corral.store.list_signals(handle.run_id) == []


async def test_signal_to_an_unknown_run_is_refused(corral: Corral) -> None:
    with pytest.raises(RunNotFound) as info:
        await corral.signal("no-such-run", "approve", True)
    assert info.value.ids == {"run_id": "no-such-run"}


async def test_signal_data_must_be_json(corral: Corral) -> None:
    @corral.workflow
    async def gate(ctx: RunContext, _: None) -> object:
        return await ctx.wait_for_signal("approve")

    handle = await corral.start(gate)
    with pytest.raises(NotSerializable, match="signal 'approve'"):
        await corral.signal(handle.run_id, "approve", object())
    assert await corral.store.list_signals(handle.run_id) == []
