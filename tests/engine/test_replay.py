"""Replay: the journal decides what already happened; code that strays from it is refused."""

# Only until RunContext.step types `ctx.step(async_fn)`: its `Callable[..., Awaitable[T]] |
# Callable[..., T]` parameter makes mypy infer T as Never (test_typing.py pins the bug).

from __future__ import annotations

import asyncio
import datetime as dt
import json
import uuid

from corral import Corral, RunContext
from corral.testing import FakeClock

from .harness import Calls, error_of


async def test_code_asking_for_a_different_step_raises_non_determinism(
    corral: Corral, clock: FakeClock
) -> None:
    calls = Calls()
    version = {"step": "reserve"}

    async def act(what: str) -> str:
        calls.hit(what)
        return what

    @corral.workflow
    async def flow(ctx: RunContext, _: None) -> str:
        await ctx.step(act, "first", name="first")
        await ctx.step(act, version["step"], name=version["step"])
        await ctx.sleep(10)
        return "done"

    handle = await corral.start(flow)
    await corral.run_until_idle()
    assert await handle.status() == "waiting"

    version["step"] = "charge"  # the code changed while the run was parked
    clock.advance(10)
    await corral.run_until_idle()

    run = await handle.get()
    assert run.status == "failed"
    error = error_of(run)
    assert error["code"] == "non_determinism"
    assert error["run_id"] == handle.run_id
    assert error["seq"] == 2
    assert error["recorded"] == "step reserve"
    assert error["requested"] == "step charge"
    assert handle.run_id in error["message"]
    assert "step 2" in error["message"]
    assert calls == {"first": 1, "reserve": 1}  # the changed step never ran


async def test_code_asking_for_a_different_kind_raises_non_determinism(
    corral: Corral, clock: FakeClock
) -> None:
    version = {"sleep_first": True}

    async def noop() -> None:
        return None

    @corral.workflow
    async def flow(ctx: RunContext, _: None) -> None:
        if version["sleep_first"]:
            await ctx.sleep(10)
        await ctx.step(noop, name="sleep")

    handle = await corral.start(flow)
    await corral.run_until_idle()
    version["sleep_first"] = False
    clock.advance(10)
    await corral.run_until_idle()

    error = error_of(await handle.get())
    assert error["code"] == "non_determinism"
    assert (error["seq"], error["recorded"], error["requested"]) == (1, "sleep sleep", "step sleep")


async def test_journal_with_more_steps_than_the_code_raises_non_determinism(
    corral: Corral, clock: FakeClock
) -> None:
    version = {"steps": 3, "sleep": True}

    async def act(n: int) -> int:
        return n

    @corral.workflow
    async def flow(ctx: RunContext, _: None) -> int:
        total = 0
        for n in range(version["steps"]):
            total += await ctx.step(act, n, name=f"act{n}")
        if version["sleep"]:
            await ctx.sleep(10)
        return total

    handle = await corral.start(flow)
    await corral.run_until_idle()

    # The new code takes one step and returns before the recorded steps and sleep.
    version.update(steps=1, sleep=False)
    clock.advance(10)
    await corral.run_until_idle()

    error = error_of(await handle.get())
    assert error["code"] == "non_determinism"
    # The error names the first recorded step the code no longer makes.
    assert error["seq"] == 2
    assert error["recorded"] == "step act1"
    assert error["requested"] == "(end of workflow)"


async def test_gather_numbers_steps_in_argument_order_live_and_on_replay(
    corral: Corral, clock: FakeClock
) -> None:
    calls = Calls()
    fast_done = asyncio.Event()
    results: list[list[object]] = []

    async def slow() -> str:
        calls.hit("slow")
        await fast_done.wait()  # finishes after `fast`, though called first
        return "slow"

    async def fast() -> str:
        calls.hit("fast")
        fast_done.set()
        return "fast"

    @corral.workflow
    async def child(ctx: RunContext, n: int) -> int:
        return n * 10

    @corral.workflow
    async def fan_out(ctx: RunContext, _: None) -> list[object]:
        out = await asyncio.gather(
            ctx.step(slow, name="slow"),
            ctx.step(fast, name="fast"),
            ctx.run_child(child, 1),
            ctx.run_child(child, 2),
        )
        results.append(list(out))
        await ctx.sleep(1)
        return list(out)

    handle = await corral.start(fan_out)
    await corral.run_until_idle()
    clock.advance(1)
    await corral.run_until_idle()

    assert await handle.wait_for_result(timeout=5) == ["slow", "fast", 10, 20]
    # Live, then replayed after the sleep; a child finishing while the parent was being
    # claimed may wake it once more (a spurious wake-up is allowed). Every pass sees the same.
    assert len(results) >= 2
    assert all(result == ["slow", "fast", 10, 20] for result in results)
    assert calls == {"slow": 1, "fast": 1}
    journal = await corral.journal(handle.run_id)
    assert [(s.seq, s.kind, s.name) for s in journal] == [
        (1, "step", "slow"),
        (2, "step", "fast"),
        (3, "child.start", "child"),
        (4, "child.result", "child"),
        (5, "child.start", "child"),
        (6, "child.result", "child"),
        (7, "sleep", "sleep"),
    ]
    # Completion order differed from call order; the numbers follow the calls.
    slow_entry, fast_entry = journal[0], journal[1]
    assert slow_entry.finished_at is not None
    assert fast_entry.finished_at is not None
    children = {json.loads(s.result or "null"): s.seq for s in journal if s.kind == "child.start"}
    for child_run_id, seq in children.items():
        child_run = await corral.get_run(child_run_id)
        assert (child_run.parent_run_id, child_run.parent_step_seq) == (handle.run_id, seq)
    assert json.loads((await corral.get_run(next(iter(children)))).input) == 1


async def test_now_random_and_uuid4_are_the_same_on_replay(
    corral: Corral, clock: FakeClock
) -> None:
    seen: list[tuple[dt.datetime, float, int, uuid.UUID]] = []

    @corral.workflow
    async def flow(ctx: RunContext, _: None) -> str:
        now = await ctx.now()
        value = ctx.random.random()
        pick = ctx.random.randint(0, 1_000_000)
        ident = ctx.uuid4()
        seen.append((now, value, pick, ident))
        await ctx.sleep(300)
        return f"{now.isoformat()} {value} {pick} {ident}"

    start = clock.now()
    handle = await corral.start(flow)
    await corral.run_until_idle()
    clock.advance(300)
    await corral.run_until_idle()

    first, replayed = seen
    assert first == replayed
    assert first[0] == dt.datetime.fromtimestamp(start, tz=dt.UTC)  # not the time of the replay
    assert first[3].version == 4
    assert await handle.wait_for_result(timeout=5) == (
        f"{first[0].isoformat()} {first[1]} {first[2]} {first[3]}"
    )
    kinds = [s.kind for s in await corral.journal(handle.run_id)]
    assert kinds == ["now", "sleep"]


async def test_randomness_differs_between_runs(corral: Corral) -> None:
    @corral.workflow
    async def flow(ctx: RunContext, _: None) -> str:
        return str(ctx.uuid4())

    first = await corral.start(flow)
    second = await corral.start(flow)
    await corral.run_until_idle()
    assert await first.wait_for_result(timeout=5) != await second.wait_for_result(timeout=5)


async def test_is_replaying_is_true_only_over_journaled_steps(
    corral: Corral, clock: FakeClock
) -> None:
    flags: list[tuple[str, bool]] = []

    async def noop() -> None:
        return None

    @corral.workflow
    async def flow(ctx: RunContext, _: None) -> None:
        flags.append(("before step", ctx.is_replaying))
        await ctx.step(noop, name="noop")
        flags.append(("before sleep", ctx.is_replaying))
        await ctx.sleep(1)
        flags.append(("after sleep", ctx.is_replaying))

    await corral.start(flow)
    await corral.run_until_idle()
    clock.advance(1)
    await corral.run_until_idle()
    assert flags == [
        ("before step", False),
        ("before sleep", False),
        ("before step", True),
        ("before sleep", True),
        ("after sleep", False),
    ]


async def test_a_workflow_cannot_swallow_non_determinism(corral: Corral, clock: FakeClock) -> None:
    """A broad `except Exception` around a step must not turn a changed workflow into a success.

    The journal no longer describes what this code does, so the run must fail with
    `non_determinism` whatever the workflow catches, as the design promises ("raises a
    non-determinism error rather than doing something new silently").
    """
    calls = Calls()
    version = {"name": "charge"}

    async def charge() -> str:
        calls.hit(version["name"])
        return "charged"

    @corral.workflow
    async def flow(ctx: RunContext, _: None) -> str:
        try:
            outcome = await ctx.step(charge, name=version["name"])
        except Exception:  # a common "best effort" pattern
            outcome = "skipped"
        await ctx.sleep(10)
        return outcome

    handle = await corral.start(flow)
    await corral.run_until_idle()
    version["name"] = "charge_card"
    clock.advance(10)
    await corral.run_until_idle()

    run = await handle.get()
    assert run.status == "failed", f"the run {run.status} with {run.result}"
    assert error_of(run)["code"] == "non_determinism"
    assert calls == {"charge": 1}
