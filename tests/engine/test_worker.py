"""Workers: claim runnable runs, hold only the ones executing, hand runs back on stop."""

# Only until RunContext.step types `ctx.step(async_fn)`: its `Callable[..., Awaitable[T]] |
# Callable[..., T]` parameter makes mypy infer T as Never (test_typing.py pins the bug).

from __future__ import annotations

import asyncio
import logging
from typing import Any

import pytest

from corral import Corral, RunContext, StoreUnavailable, Worker, current_step
from corral.store import RunRecord, Store
from corral.testing import FakeClock

from .harness import Calls, backdate_lease, eventually, wait_for_status


async def test_until_idle_returns_with_waiting_runs_parked(
    corral: Corral, clock: FakeClock
) -> None:
    @corral.workflow
    async def sleeper(ctx: RunContext, seconds: int) -> int:
        await ctx.sleep(seconds)
        return seconds

    @corral.workflow
    async def waiter(ctx: RunContext, _: None) -> object:
        return await ctx.wait_for_signal("go")

    @corral.workflow
    async def quick(ctx: RunContext, _: None) -> str:
        return "done"

    await corral.start(sleeper, 100)
    await corral.start(waiter)
    await corral.start(quick)
    stats = await corral.run_until_idle()

    assert stats.claimed == 3
    assert stats.outcomes == {"waiting": 2, "succeeded": 1}
    counts = await corral.store.count_runs()
    assert (counts["waiting"], counts["succeeded"], counts["running"]) == (2, 1, 0)
    assert await corral.store.next_wake_at() == clock.now() + 100


async def test_a_paused_run_holds_no_task_in_the_worker(corral: Corral) -> None:
    calls = Calls()

    async def finish(data: object) -> str:
        calls.hit("finish")
        return f"got {data}"

    @corral.workflow
    async def gate(ctx: RunContext, _: None) -> str:
        data = await ctx.wait_for_signal("go")
        return await ctx.step(finish, data, name="finish")

    worker = corral.worker(worker_id="long-lived")
    task = asyncio.create_task(worker.run())
    try:
        handles = [await corral.start(gate) for _ in range(5)]

        async def all_parked() -> bool:
            statuses = {(await h.get()).status for h in handles}
            return statuses == {"waiting"} and worker.active_runs == []

        await eventually(all_parked, what="five runs parked and unloaded")
        assert worker.stats.outcomes == {"waiting": 5}

        await corral.signal(handles[2].run_id, "go", 7)  # wakes the worker, not only the run
        assert await handles[2].wait_for_result(timeout=5) == "got 7"
        assert calls == {"finish": 1}
        assert worker.stats.claimed == 6
        assert {(await h.get()).status for h in handles[:2] + handles[3:]} == {"waiting"}
    finally:
        worker.stop()
        await asyncio.wait_for(task, timeout=5)


async def test_a_long_lived_worker_wakes_for_a_timer(corral: Corral, clock: FakeClock) -> None:
    @corral.workflow
    async def napper(ctx: RunContext, _: None) -> str:
        await ctx.sleep(60)
        return "rested"

    worker = corral.worker(worker_id="long-lived")
    task = asyncio.create_task(worker.run())
    try:
        handle = await corral.start(napper)
        await wait_for_status(corral, handle.run_id, "waiting")
        clock.advance(60)  # nobody calls run_until_idle: the worker's own timer must fire
        # Time keeps flowing (as it would) in case the worker parked on the clock after the jump.
        await wait_for_status(
            corral, handle.run_id, "succeeded", tick=lambda: clock.advance(worker.poll_interval)
        )
        assert await handle.wait_for_result(timeout=5) == "rested"
    finally:
        worker.stop()
        await asyncio.wait_for(task, timeout=5)


async def test_concurrency_bounds_the_runs_in_flight(corral: Corral) -> None:
    in_flight: list[int] = []
    two_in = asyncio.Event()
    worker = corral.worker(concurrency=2)

    async def work(n: int) -> int:
        in_flight.append(len(worker.active_runs))
        if len(worker.active_runs) >= 2:
            two_in.set()
        await asyncio.wait_for(two_in.wait(), timeout=5)
        return n

    @corral.workflow
    async def flow(ctx: RunContext, n: int) -> int:
        return await ctx.step(work, n, name="work")

    handles = [await corral.start(flow, n) for n in range(6)]
    stats = await worker.run(until_idle=True)
    assert stats.outcomes == {"succeeded": 6}
    assert max(in_flight) == 2
    assert [await h.wait_for_result(timeout=5) for h in handles] == list(range(6))


async def test_stop_hands_a_run_in_flight_back(corral: Corral) -> None:
    calls = Calls()
    entered = asyncio.Event()
    release = asyncio.Event()

    async def first() -> str:
        calls.hit("first")
        entered.set()
        await release.wait()
        return "first"

    async def second() -> str:
        calls.hit("second")
        return "second"

    @corral.workflow
    async def flow(ctx: RunContext, _: None) -> list[str]:
        return [await ctx.step(first, name="first"), await ctx.step(second, name="second")]

    worker = corral.worker(worker_id="stopping")
    task = asyncio.create_task(worker.run())
    handle = await corral.start(flow)
    await asyncio.wait_for(entered.wait(), timeout=5)
    worker.stop()  # the current step may finish; no new step starts
    release.set()
    await asyncio.wait_for(task, timeout=5)

    run = await handle.get()
    assert run.status == "waiting"
    assert run.wake_at == corral.clock.now()  # runnable again at once, on any worker
    assert calls == {"first": 1}
    [entry] = await corral.journal(handle.run_id)
    assert (entry.name, entry.status) == ("first", "succeeded")

    await corral.run_until_idle()
    assert await handle.wait_for_result(timeout=5) == ["first", "second"]
    assert calls == {"first": 1, "second": 1}


async def test_two_workers_share_the_runs(corral: Corral) -> None:
    done_by: dict[int, str] = {}
    both_busy = asyncio.Event()
    busy: set[str] = set()

    a = corral.worker(worker_id="a", concurrency=1)
    b = corral.worker(worker_id="b", concurrency=1)

    async def work(n: int) -> int:
        return n

    @corral.workflow
    async def flow(ctx: RunContext, n: int) -> int:
        owner = "a" if ctx.run_id in a.active_runs else "b"
        busy.add(owner)
        if len(busy) == 2:
            both_busy.set()
        await asyncio.wait_for(both_busy.wait(), timeout=5)
        done_by[n] = owner
        return await ctx.step(work, n, name="work")

    handles = [await corral.start(flow, n) for n in range(4)]
    await asyncio.gather(a.run(until_idle=True), b.run(until_idle=True))
    assert [await h.wait_for_result(timeout=5) for h in handles] == list(range(4))
    assert set(done_by.values()) == {"a", "b"}
    assert [(await h.get()).claims for h in handles] == [1] * 4  # no run executed twice


def test_concurrency_must_be_positive(corral: Corral) -> None:
    with pytest.raises(ValueError, match="concurrency"):
        corral.worker(concurrency=0)


async def test_worker_records_its_id_as_the_lease_owner(corral: Corral) -> None:
    entered = asyncio.Event()
    release = asyncio.Event()

    async def hold() -> None:
        entered.set()
        await release.wait()

    @corral.workflow
    async def flow(ctx: RunContext, _: None) -> None:
        await ctx.step(hold, name="hold")

    worker: Worker = corral.worker(worker_id="host-1:42:abc")
    task = asyncio.create_task(worker.run())
    try:
        handle = await corral.start(flow)
        await asyncio.wait_for(entered.wait(), timeout=5)
        run = await handle.get()
        assert (run.status, run.lease_owner) == ("running", "host-1:42:abc")
        release.set()
        await wait_for_status(corral, handle.run_id, "succeeded")
        assert (await handle.get()).lease_owner is None
    finally:
        worker.stop()
        await asyncio.wait_for(task, timeout=5)


class AwayStore:
    """The test's real store, whose claims fail while `away` is set (a database restart)."""

    def __init__(self, store: Store) -> None:
        self._store = store
        self.away = True
        self.failed_claims = 0

    def __getattr__(self, name: str) -> Any:
        return getattr(self._store, name)

    async def claim_runs(self, **kwargs: Any) -> list[RunRecord]:
        if self.away:
            self.failed_claims += 1
            raise StoreUnavailable("PostgreSQL at db is unreachable: Connection refused")
        return await self._store.claim_runs(**kwargs)


async def test_a_worker_says_once_that_the_database_is_away_and_once_that_it_is_back(
    store: Store, caplog: pytest.LogCaptureFixture
) -> None:
    away = AwayStore(store)
    corral = Corral(store=away, poll_interval=0.01)

    @corral.workflow
    async def one(ctx: RunContext) -> int:
        return 1

    await corral.open()
    handle = await corral.start(one)
    worker = corral.worker(concurrency=1, poll_interval=0.01)
    task = asyncio.create_task(worker.run())
    try:
        with caplog.at_level(logging.WARNING, logger="corral.worker"):

            async def tried_a_while() -> bool:
                return away.failed_claims >= 4

            await eventually(tried_a_while, what="several failed claims")
            away.away = False
            assert await handle.wait_for_result(timeout=10) == 1
    finally:
        worker.stop()
        await task
        await corral.close()
    messages = [r.getMessage() for r in caplog.records if r.name == "corral.worker"]
    assert sum("unreachable" in m for m in messages) == 1, messages
    assert sum("the database is back" in m for m in messages) == 1, messages


async def test_a_worker_that_claims_its_own_expired_run_stops_the_older_execution(
    corral: Corral, store: Store, clock: FakeClock
) -> None:
    """Its lease ran out (say its heartbeats could not reach the database) and this very worker
    claimed the run again: the superseded execution is cancelled, not left running beside."""
    attempts: list[tuple[str, bool]] = []
    superseded = asyncio.Event()
    release = asyncio.Event()

    async def long_call() -> str:
        info = current_step()
        assert info is not None
        attempts.append((info.run_id, info.redelivered))
        try:
            await release.wait()
        except asyncio.CancelledError:
            superseded.set()
            raise
        return "done"

    @corral.workflow
    async def flow(ctx: RunContext) -> str:
        return await ctx.step(long_call, name="long_call")

    worker = corral.worker(worker_id="w1", concurrency=3)  # room for the waker and the run
    task = asyncio.create_task(worker.run())
    try:
        handle = await corral.start(flow)

        async def started() -> bool:
            return len(attempts) == 1 and bool(await store.load_journal(handle.run_id))

        await eventually(started, what="the first attempt to be in flight")
        await backdate_lease(store, handle.run_id, 31)
        await corral.start(flow)  # any new run wakes the worker, which claims again
        await asyncio.wait_for(superseded.wait(), timeout=5)
        release.set()
        assert await handle.wait_for_result(timeout=5) == "done"
    finally:
        release.set()
        worker.stop()
        await task
    # The run's second attempt is a redelivery of the first (the waker run has its own).
    assert [again for run_id, again in attempts if run_id == handle.run_id] == [False, True]
    assert (await handle.get()).claims == 2
