"""Child runs: started by a parent as a journaled step, awaited durably, failures surfaced."""

# Only until RunContext.step types `ctx.step(async_fn)`: its `Callable[..., Awaitable[T]] |
# Callable[..., T]` parameter makes mypy infer T as Never (test_typing.py pins the bug).

from __future__ import annotations

import json
import uuid

import pytest
from pydantic import BaseModel

from corral import ChildRunFailed, Corral, RunContext
from corral.testing import FakeClock

from .harness import Calls, error_of


class Quote(BaseModel):
    item: str
    price: int


async def test_run_child_returns_the_child_output_typed(corral: Corral) -> None:
    calls = Calls()

    async def price_of(item: str) -> int:
        calls.hit(item)
        return len(item) * 10

    @corral.workflow
    async def quote(ctx: RunContext, item: list[str]) -> Quote:
        return Quote(item=item[0], price=await ctx.step(price_of, item[0], name="price"))

    @corral.workflow
    async def basket(ctx: RunContext, items: list[str]) -> int:
        total = 0
        for item in items:
            q = await ctx.run_child(quote, [item])
            assert isinstance(q, Quote)
            total += q.price
        return total

    handle = await corral.start(basket, ["tea", "bread"])
    await corral.run_until_idle()
    assert await handle.wait_for_result(timeout=5) == 80
    assert calls == {"tea": 1, "bread": 1}

    children = await corral.store.list_runs(parent_run_id=handle.run_id)
    assert sorted(c.parent_step_seq or 0 for c in children) == [1, 3]
    assert all(c.status == "succeeded" for c in children)
    journal = await corral.journal(handle.run_id)
    assert [(s.kind, s.name) for s in journal] == [
        ("child.start", "quote"),
        ("child.result", "quote"),
        ("child.start", "quote"),
        ("child.result", "quote"),
    ]
    assert json.loads(journal[1].result or "{}") == {"item": "tea", "price": 30}


async def test_start_child_then_await_its_handle_later(corral: Corral, clock: FakeClock) -> None:
    handles_seen: list[str] = []

    async def work() -> str:
        return "parent work"

    @corral.workflow
    async def child(ctx: RunContext, n: int) -> int:
        await ctx.sleep(30)
        return n + 1

    @corral.workflow
    async def parent(ctx: RunContext, _: None) -> list[object]:
        handle = await ctx.start_child(child, 41)
        handles_seen.append(handle.run_id)
        done = await ctx.step(work, name="work")
        return [done, await handle.result()]

    handle = await corral.start(parent)
    await corral.run_until_idle()
    assert await handle.status() == "waiting"
    [child_run] = await corral.store.list_runs(parent_run_id=handle.run_id)
    assert child_run.status == "waiting"

    clock.advance(30)
    await corral.run_until_idle()  # the child finishes, which wakes the parent
    assert await handle.wait_for_result(timeout=5) == ["parent work", 42]

    # Every execution of the parent found the same child: its id derives from the step.
    assert len(handles_seen) >= 2
    assert set(handles_seen) == {child_run.run_id}
    assert uuid.UUID(child_run.run_id).version == 5
    journal = await corral.journal(handle.run_id)
    assert [(s.seq, s.kind) for s in journal] == [
        (1, "child.start"),
        (2, "step"),
        (3, "child.result"),
    ]
    assert json.loads(journal[0].result or "null") == child_run.run_id


async def test_child_ids_differ_per_parent_and_step(corral: Corral) -> None:
    @corral.workflow
    async def child(ctx: RunContext, n: int) -> int:
        return n

    @corral.workflow
    async def parent(ctx: RunContext, _: None) -> list[str]:
        first = await ctx.start_child(child, 1)
        second = await ctx.start_child(child, 2)
        return [first.run_id, second.run_id]

    a = await corral.start(parent)
    b = await corral.start(parent)
    await corral.run_until_idle()
    ids_a = await a.wait_for_result(timeout=5)
    ids_b = await b.wait_for_result(timeout=5)
    assert len(set(ids_a) | set(ids_b)) == 4


async def test_child_failure_raises_child_run_failed_in_the_parent(corral: Corral) -> None:
    caught: list[ChildRunFailed] = []

    async def fail() -> None:
        raise ValueError("out of stock")

    @corral.workflow
    async def child(ctx: RunContext, _: None) -> None:
        await ctx.step(fail, name="reserve")

    @corral.workflow
    async def parent(ctx: RunContext, _: None) -> str:
        try:
            await ctx.run_child(child)
        except ChildRunFailed as exc:
            caught.append(exc)
            return "compensated"
        return "ok"

    handle = await corral.start(parent)
    await corral.run_until_idle()
    assert await handle.wait_for_result(timeout=5) == "compensated"
    [child_run] = await corral.store.list_runs(parent_run_id=handle.run_id)
    assert child_run.status == "failed"
    # The live error and any replay of it come from the journal; at least the live one is here.
    error = caught[-1]
    assert error.ids == {
        "run_id": handle.run_id,
        "child_run_id": child_run.run_id,
        "error_code": "step_failed",
    }
    assert "out of stock" in error.message
    _, result = await corral.journal(handle.run_id)
    assert (result.kind, result.status) == ("child.result", "failed")


async def test_uncaught_child_failure_fails_the_parent(corral: Corral) -> None:
    @corral.workflow
    async def child(ctx: RunContext, _: None) -> None:
        raise RuntimeError("child broke")

    @corral.workflow
    async def parent(ctx: RunContext, _: None) -> None:
        await ctx.run_child(child)

    handle = await corral.start(parent)
    await corral.run_until_idle()
    run = await handle.get()
    assert run.status == "failed"
    assert error_of(run)["code"] == "child_failed"
    with pytest.raises(Exception, match="child broke"):
        await handle.wait_for_result(timeout=5)


async def test_child_run_by_reference_name(corral: Corral) -> None:
    @corral.workflow(name="pricing.quote")
    async def quote(ctx: RunContext, n: int) -> int:
        return n * 2

    @corral.workflow
    async def parent(ctx: RunContext, n: int) -> object:
        return await ctx.run_child("pricing.quote", n)

    handle = await corral.start(parent, 21)
    await corral.run_until_idle()
    assert await handle.wait_for_result(timeout=5) == 42
    [child_run] = await corral.store.list_runs(parent_run_id=handle.run_id)
    assert child_run.workflow == "pricing.quote"
