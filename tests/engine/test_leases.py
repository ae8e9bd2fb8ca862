"""Leases: a claimed run belongs to one epoch; a worker that lost it can do no harm."""

# Only until RunContext.step types `ctx.step(async_fn)`: its `Callable[..., Awaitable[T]] |
# Callable[..., T]` parameter makes mypy infer T as Never (test_typing.py pins the bug).

from __future__ import annotations

import asyncio
import dataclasses

import pytest

from corral import Corral, LeaseLost, RunContext, current_step
from corral.store import NewRun, StepWrite, Store
from corral.testing import FakeClock

from .harness import Calls, backdate_lease, eventually


async def _claim_one(store: Store, clock: FakeClock, worker_id: str) -> tuple[str, int]:
    [run] = await store.claim_runs(worker_id=worker_id, limit=1, now=clock.now(), lease_ttl=30)
    assert run.lease_owner == worker_id
    return run.run_id, run.lease_epoch


async def test_a_stale_epoch_writes_nothing(corral: Corral, store: Store, clock: FakeClock) -> None:
    """Worker 1 froze past its lease; worker 2 took the run; worker 1 wakes up and writes."""

    @corral.workflow
    async def flow(ctx: RunContext, _: None) -> None:
        return None

    handle = await corral.start(flow)
    run_id, epoch1 = await _claim_one(store, clock, "w1")
    await backdate_lease(store, run_id, 31)
    assert await store.has_runnable(now=clock.now())
    _, epoch2 = await _claim_one(store, clock, "w2")
    assert epoch2 == epoch1 + 1
    before = await store.get_run(run_id)

    stale = StepWrite(
        run_id=run_id, epoch=epoch1, seq=1, kind="step", name="charge", status="started",
        at=clock.now(),
    )  # fmt: skip
    with pytest.raises(LeaseLost) as info:
        await store.write_step(stale)
    assert info.value.ids == {"run_id": run_id, "epoch": epoch1}
    with pytest.raises(LeaseLost):
        await store.finish_run(
            run_id, epoch1, status="succeeded", result="null", error=None, now=clock.now()
        )
    with pytest.raises(LeaseLost):
        await store.suspend_run(run_id, epoch1, wake_at=None, seen_wake_seq=0, now=clock.now())
    with pytest.raises(LeaseLost):
        await store.release_run(run_id, epoch1, wake_at=clock.now(), now=clock.now())
    with pytest.raises(LeaseLost):
        await store.take_signal(stale, signal_name="approve")
    child = NewRun(
        run_id="child-of-stale", workflow="flow", workflow_version="1", input="null",
        created_at=clock.now(), parent_run_id=run_id, parent_step_seq=1,
    )  # fmt: skip
    with pytest.raises(LeaseLost):
        await store.start_child(stale, child)

    assert await store.load_journal(run_id) == []
    assert await store.get_run("child-of-stale") is None
    assert await store.get_run(run_id) == before  # still running, under w2's lease
    assert before is not None
    assert (before.status, before.lease_owner) == ("running", "w2")

    # The current epoch writes as usual.
    await store.write_step(dataclasses.replace(stale, epoch=epoch2))
    assert [s.seq for s in await store.load_journal(run_id)] == [1]
    assert handle.run_id == run_id


async def test_renew_leases_reports_the_lost_ones(
    corral: Corral, store: Store, clock: FakeClock
) -> None:
    @corral.workflow
    async def flow(ctx: RunContext, _: None) -> None:
        return None

    kept = (await corral.start(flow)).run_id
    await _claim_one(store, clock, "w1")
    lost = (await corral.start(flow)).run_id
    _, lost_epoch = await _claim_one(store, clock, "w1")
    await backdate_lease(store, lost, 31)
    await _claim_one(store, clock, "w2")  # takes `lost` over

    clock.advance(5)
    result = await store.renew_leases(
        [(kept, 1), (lost, lost_epoch), ("no-such-run", 1)], now=clock.now(), lease_ttl=30
    )
    assert sorted(result) == sorted([lost, "no-such-run"])
    kept_run = await store.get_run(kept)
    assert kept_run is not None
    assert kept_run.lease_expires_at == clock.now() + 30


async def test_a_worker_drops_a_run_whose_lease_was_lost(
    corral: Corral, store: Store, clock: FakeClock
) -> None:
    entered = asyncio.Event()
    dropped = asyncio.Event()
    calls = Calls()

    async def long_call() -> None:
        calls.hit("long_call")
        entered.set()
        try:
            await asyncio.Event().wait()
        except asyncio.CancelledError:
            dropped.set()
            raise

    @corral.workflow
    async def flow(ctx: RunContext, _: None) -> None:
        await ctx.step(long_call, name="long_call")

    # One slot: w1 cannot claim its own run again once its lease is back-dated (a NOTIFY may
    # wake it at any moment on PostgreSQL), so the claim below is w2's.
    worker = corral.worker(worker_id="w1", concurrency=1)
    task = asyncio.create_task(worker.run())
    try:
        handle = await corral.start(flow)
        await asyncio.wait_for(entered.wait(), timeout=5)
        await backdate_lease(store, handle.run_id, 31)
        await _claim_one(store, clock, "w2")

        clock.advance(worker.heartbeat_interval)  # the heartbeat finds the lease gone
        await asyncio.wait_for(dropped.wait(), timeout=5)

        async def idle() -> bool:
            return worker.active_runs == []

        await eventually(idle, what="worker w1 dropped the run")
        run = await handle.get()
        assert (run.status, run.lease_owner, run.lease_epoch) == ("running", "w2", 2)
        assert calls["long_call"] == 1
    finally:
        worker.stop()
        await asyncio.wait_for(task, timeout=5)


async def test_the_heartbeat_keeps_a_long_step_leased(
    corral: Corral, store: Store, clock: FakeClock
) -> None:
    entered = asyncio.Event()
    release = asyncio.Event()

    async def long_call() -> str:
        entered.set()
        await release.wait()
        return "done"

    @corral.workflow
    async def flow(ctx: RunContext, _: None) -> str:
        return await ctx.step(long_call, name="long_call")

    worker = corral.worker(worker_id="w1")
    task = asyncio.create_task(worker.run())
    try:
        handle = await corral.start(flow)
        await asyncio.wait_for(entered.wait(), timeout=5)
        first = await handle.get()
        assert first.lease_expires_at == clock.now() + corral.lease_ttl
        first_expiry = first.lease_expires_at

        async def held_past_first_expiry() -> bool:
            run = await handle.get()
            assert run.lease_expires_at is not None
            assert run.lease_expires_at > clock.now(), "the lease lapsed while the step ran"
            return clock.now() > first_expiry and run.lease_expires_at > first_expiry

        # Virtual time flows a second per poll; the heartbeat renews every 10 s of it.
        await eventually(
            held_past_first_expiry,
            what="the heartbeat kept the lease past its first expiry",
            tick=lambda: clock.advance(1),
        )
        assert await store.claim_runs(worker_id="w2", limit=1, now=clock.now(), lease_ttl=30) == []

        release.set()
        assert await handle.wait_for_result(timeout=5) == "done"
        assert (await handle.get()).claims == 1
    finally:
        worker.stop()
        await asyncio.wait_for(task, timeout=5)


async def test_an_expired_lease_is_resumed_by_another_worker(
    corral: Corral, store: Store, clock: FakeClock
) -> None:
    """The claiming worker died before doing anything; the run is not lost."""
    keys: list[str] = []

    async def act() -> str:
        info = current_step()
        assert info is not None
        keys.append(info.idempotency_key)
        return "acted"

    @corral.workflow
    async def flow(ctx: RunContext, _: None) -> str:
        return await ctx.step(act, name="act")

    handle = await corral.start(flow)
    await _claim_one(store, clock, "dead-worker")
    assert (await corral.run_until_idle()).claimed == 0  # its lease is still valid

    clock.advance(corral.lease_ttl + 1)
    await corral.run_until_idle()
    assert await handle.wait_for_result(timeout=5) == "acted"
    run = await handle.get()
    assert (run.claims, run.lease_epoch) == (2, 2)
    assert keys == [f"{handle.run_id}:1"]
