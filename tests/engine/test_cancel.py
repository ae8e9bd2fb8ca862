"""Cancellation: of pending, waiting and running runs, cascading to children, waking parents."""

# Only until RunContext.step types `ctx.step(async_fn)`: its `Callable[..., Awaitable[T]] |
# Callable[..., T]` parameter makes mypy infer T as Never (test_typing.py pins the bug).

from __future__ import annotations

import asyncio

import pytest

from corral import ChildRunFailed, Corral, LeaseLost, RunAlreadyFinished, RunContext, RunNotFound
from corral.store import StepWrite
from corral.testing import FakeClock

from .harness import Calls, error_of, eventually, wait_for_status


async def test_cancel_a_pending_run(corral: Corral) -> None:
    calls = Calls()

    async def act() -> None:
        calls.hit("act")

    @corral.workflow
    async def flow(ctx: RunContext, _: None) -> None:
        await ctx.step(act, name="act")

    handle = await corral.start(flow)
    record = await corral.cancel(handle.run_id)
    assert record.status == "cancelled"
    assert record.lease_epoch == 1  # bumped: any worker holding an older epoch is fenced off
    assert error_of(record)["code"] == "cancelled"

    assert (await corral.run_until_idle()).claimed == 0
    assert calls["act"] == 0
    with pytest.raises(Exception, match="cancelled") as info:
        await handle.wait_for_result(timeout=5)
    assert info.value.ids["error_code"] == "cancelled"  # type: ignore[attr-defined]


async def test_cancel_a_waiting_run(corral: Corral, clock: FakeClock) -> None:
    calls = Calls()

    async def act() -> None:
        calls.hit("act")

    @corral.workflow
    async def flow(ctx: RunContext, _: None) -> None:
        await ctx.sleep(60)
        await ctx.step(act, name="act")

    handle = await corral.start(flow)
    await corral.run_until_idle()
    await corral.cancel(handle.run_id)
    run = await handle.get()
    assert (run.status, run.wake_at) == ("cancelled", None)

    clock.advance(60)
    assert (await corral.run_until_idle()).claimed == 0
    assert calls["act"] == 0


async def test_cancel_a_running_run_stops_its_worker(corral: Corral) -> None:
    entered = asyncio.Event()
    interrupted = asyncio.Event()
    calls = Calls()

    async def long_call() -> str:
        calls.hit("long_call")
        entered.set()
        try:
            await asyncio.Event().wait()  # a model call that would take for ever
        except asyncio.CancelledError:
            interrupted.set()
            raise
        return "unreachable"

    async def after() -> None:
        calls.hit("after")

    @corral.workflow
    async def flow(ctx: RunContext, _: None) -> None:
        await ctx.step(long_call, name="long_call")
        await ctx.step(after, name="after")

    worker = corral.worker(worker_id="w1")
    task = asyncio.create_task(worker.run())
    try:
        handle = await corral.start(flow)
        await asyncio.wait_for(entered.wait(), timeout=5)
        assert worker.active_runs == [handle.run_id]

        await corral.cancel(handle.run_id)
        await asyncio.wait_for(interrupted.wait(), timeout=5)

        async def idle() -> bool:
            return worker.active_runs == []

        await eventually(idle, what="the worker let go of the run")
        run = await handle.get()
        assert run.status == "cancelled"
        assert calls == {"long_call": 1}
    finally:
        worker.stop()
        await asyncio.wait_for(task, timeout=5)


async def test_cancel_cascades_to_unfinished_children(corral: Corral) -> None:
    @corral.workflow
    async def quick(ctx: RunContext, _: None) -> str:
        return "done"

    @corral.workflow
    async def grandchild(ctx: RunContext, _: None) -> object:
        return await ctx.wait_for_signal("go")

    @corral.workflow
    async def child(ctx: RunContext, _: None) -> object:
        return await ctx.run_child(grandchild)

    @corral.workflow
    async def parent(ctx: RunContext, _: None) -> list[object]:
        done = await ctx.run_child(quick)
        return [done, await ctx.run_child(child)]

    handle = await corral.start(parent)
    await corral.run_until_idle()
    runs = await corral.list_runs()
    assert sorted(r.status for r in runs) == ["succeeded", "waiting", "waiting", "waiting"]

    await corral.cancel(handle.run_id)
    by_workflow = {r.workflow: r for r in await corral.list_runs()}
    assert by_workflow["parent"].status == "cancelled"
    assert by_workflow["child"].status == "cancelled"
    assert by_workflow["grandchild"].status == "cancelled"
    assert by_workflow["quick"].status == "succeeded"  # finished runs are left as they were
    assert by_workflow["quick"].error is None

    with pytest.raises(RunAlreadyFinished):
        await corral.signal(by_workflow["grandchild"].run_id, "go", 1)
    assert (await corral.run_until_idle()).claimed == 0


async def test_parent_waiting_on_a_cancelled_child_sees_child_run_failed(corral: Corral) -> None:
    caught: list[ChildRunFailed] = []

    @corral.workflow
    async def child(ctx: RunContext, _: None) -> object:
        return await ctx.wait_for_signal("go")

    @corral.workflow
    async def parent(ctx: RunContext, _: None) -> str:
        try:
            await ctx.run_child(child)
        except ChildRunFailed as exc:
            caught.append(exc)
            return "child was cancelled"
        return "child finished"

    handle = await corral.start(parent)
    await corral.run_until_idle()
    [child_run] = await corral.store.list_runs(parent_run_id=handle.run_id)
    assert child_run.status == "waiting"

    await corral.cancel(child_run.run_id)
    parent_run = await handle.get()
    assert parent_run.status == "waiting"
    assert parent_run.wake_at is not None  # woken by the cancellation

    await corral.run_until_idle()
    assert await handle.wait_for_result(timeout=5) == "child was cancelled"
    assert caught[-1].ids["error_code"] == "cancelled"
    assert caught[-1].ids["child_run_id"] == child_run.run_id


async def test_cancel_a_finished_run_is_refused(corral: Corral) -> None:
    @corral.workflow
    async def quick(ctx: RunContext, _: None) -> int:
        return 1

    handle = await corral.start(quick)
    await corral.run_until_idle()
    with pytest.raises(RunAlreadyFinished) as info:
        await corral.cancel(handle.run_id)
    assert info.value.ids == {"run_id": handle.run_id, "status": "succeeded"}
    assert await handle.status() == "succeeded"

    await corral.cancel((second := await corral.start(quick)).run_id)
    with pytest.raises(RunAlreadyFinished):
        await corral.cancel(second.run_id)


async def test_cancel_an_unknown_run_is_refused(corral: Corral) -> None:
    with pytest.raises(RunNotFound):
        await corral.cancel("no-such-run")


async def test_cancel_fences_a_worker_in_another_process(corral: Corral, clock: FakeClock) -> None:
    """A worker this process cannot reach keeps executing; its next write is refused."""

    @corral.workflow
    async def flow(ctx: RunContext, _: None) -> None:
        return None

    handle = await corral.start(flow)
    [run] = await corral.store.claim_runs(
        worker_id="elsewhere", limit=1, now=clock.now(), lease_ttl=30
    )
    await corral.cancel(handle.run_id)
    write = StepWrite(
        run_id=run.run_id,
        epoch=run.lease_epoch,
        seq=1,
        kind="step",
        name="late",
        status="succeeded",
        at=clock.now(),
        result="1",
    )
    with pytest.raises(LeaseLost):
        await corral.store.write_step(write)
    assert await corral.journal(handle.run_id) == []
    await wait_for_status(corral, handle.run_id, "cancelled")
