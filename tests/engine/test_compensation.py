"""Compensation (sagas): steps that succeeded are undone, newest first, when the run fails or is
cancelled later; each undo is a journaled step that survives a crash."""

from __future__ import annotations

import pytest

from corral import Corral, RunContext
from corral.engine import execute_run
from corral.errors import RetryStep
from corral.store import Store
from corral.testing import FakeClock

from .harness import Crash, error_of
from .test_retries import EveryFewSeconds


class Ledger:
    """What the outside world saw: bookings made and undone."""

    def __init__(self) -> None:
        self.events: list[str] = []

    async def book(self, what: str) -> str:
        self.events.append(f"book {what}")
        return f"{what}-ref"

    async def undo(self, reference: str) -> None:
        self.events.append(f"cancel {reference}")


async def test_a_failed_run_undoes_its_steps_newest_first(corral: Corral) -> None:
    ledger = Ledger()

    async def charge_card() -> None:
        raise ValueError("card declined")

    @corral.workflow
    async def trip(ctx: RunContext, _: None) -> None:
        await ctx.step(ledger.book, "flight", name="book_flight", compensate=ledger.undo)
        await ctx.step(ledger.book, "hotel", name="book_hotel", compensate=ledger.undo)
        await ctx.step(ledger.book, "taxi", name="book_taxi")  # nothing to undo
        await ctx.step(charge_card, name="charge")

    handle = await corral.start(trip)
    await corral.run_until_idle()
    run = await handle.get()
    assert run.status == "failed"
    error = error_of(run)
    assert "card declined" in error["message"]
    assert error["compensations_failed"] == []
    assert ledger.events == [
        "book flight",
        "book hotel",
        "book taxi",
        "cancel hotel-ref",
        "cancel flight-ref",
    ]
    names = [(row.name, row.status) for row in await corral.journal(handle.run_id)]
    assert names[-2:] == [
        ("compensate:book_hotel", "succeeded"),
        ("compensate:book_flight", "succeeded"),
    ]


async def test_a_failing_compensation_is_journaled_and_the_rest_still_run(
    corral: Corral,
) -> None:
    ledger = Ledger()

    async def cannot_undo(reference: str) -> None:
        raise RuntimeError(f"{reference} is non-refundable")

    async def fail() -> None:
        raise ValueError("boom")

    @corral.workflow
    async def partly(ctx: RunContext, _: None) -> None:
        await ctx.step(ledger.book, "flight", name="flight", compensate=ledger.undo)
        await ctx.step(ledger.book, "hotel", name="hotel", compensate=cannot_undo)
        await ctx.step(fail, name="fail")

    handle = await corral.start(partly)
    await corral.run_until_idle()
    error = error_of(await handle.get())
    [failure] = error["compensations_failed"]
    assert "hotel-ref is non-refundable" in failure
    assert ledger.events[-1] == "cancel flight-ref"


async def test_compensations_survive_a_crash_in_the_middle(
    corral: Corral, store: Store, clock: FakeClock
) -> None:
    """The worker dies during the second undo; the next worker does not undo the first again."""
    ledger = Ledger()
    crashed: list[str] = []

    async def undo_once_crashing(reference: str) -> None:
        if not crashed:
            crashed.append(reference)
            raise Crash
        await ledger.undo(reference)

    async def fail() -> None:
        raise ValueError("boom")

    @corral.workflow
    async def saga(ctx: RunContext, _: None) -> None:
        await ctx.step(ledger.book, "a", name="a", compensate=undo_once_crashing)
        await ctx.step(ledger.book, "b", name="b", compensate=ledger.undo)
        await ctx.step(fail, name="fail")

    handle = await corral.start(saga)
    [run] = await store.claim_runs(worker_id="doomed", limit=1, now=clock.now(), lease_ttl=30)
    with pytest.raises(Crash):
        await execute_run(run, store=store, clock=clock, workflows=corral.workflows)
    clock.advance(31)
    await corral.run_until_idle()
    assert (await handle.get()).status == "failed"
    assert ledger.events == ["book a", "book b", "cancel b-ref", "cancel a-ref"]


async def test_a_compensation_is_retried_by_its_steps_rule(
    corral: Corral, clock: FakeClock
) -> None:
    ledger = Ledger()
    tries: list[int] = []

    async def flaky_undo(reference: str) -> None:
        tries.append(1)
        if len(tries) == 1:
            raise RetryStep("the booking API is down")
        await ledger.undo(reference)

    async def fail() -> None:
        raise ValueError("boom")

    @corral.workflow
    async def saga(ctx: RunContext, _: None) -> None:
        await ctx.step(
            ledger.book, "a", name="a", compensate=flaky_undo, retry=EveryFewSeconds(delay=5)
        )
        await ctx.step(fail, name="fail")

    handle = await corral.start(saga)
    assert (await corral.run_until_idle()).outcomes == {"waiting": 1}  # the undo waits to retry
    clock.advance(5)
    await corral.run_until_idle()
    assert (await handle.get()).status == "failed"
    assert ledger.events == ["book a", "cancel a-ref"]


async def test_cancelling_a_run_with_compensations_undoes_them(
    corral: Corral, clock: FakeClock
) -> None:
    ledger = Ledger()

    @corral.workflow
    async def order(ctx: RunContext, _: None) -> str:
        await ctx.step(ledger.book, "stock", name="reserve", compensate=ledger.undo)
        return str(await ctx.wait_for_signal("paid"))

    handle = await corral.start(order)
    await corral.run_until_idle()
    assert (await handle.get()).status == "waiting"

    record = await corral.cancel(handle.run_id)
    assert record.status == "waiting"  # the run makes its compensations first
    await corral.run_until_idle()
    run = await handle.get()
    assert run.status == "cancelled"
    assert ledger.events == ["book stock", "cancel stock-ref"]
    assert [row.name for row in await corral.journal(handle.run_id)][-1] == "compensate:reserve"


async def test_cancelling_a_run_without_compensations_is_immediate(corral: Corral) -> None:
    @corral.workflow
    async def plain(ctx: RunContext, _: None) -> str:
        return str(await ctx.wait_for_signal("go"))

    handle = await corral.start(plain)
    await corral.run_until_idle()
    assert (await corral.cancel(handle.run_id)).status == "cancelled"
