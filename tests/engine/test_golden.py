"""Golden journals: recorded runs must replay to their recorded result without re-running a step,
and a workflow changed since the recording must raise `NonDeterminismError` instead.

Each case is a workflow (and a driver that takes it from start to finish on a fresh database),
the journal it recorded in `tests/fixtures/golden/<case>.json`, and a deliberately changed
version of the workflow with the step at which replay must refuse it.
"""

from __future__ import annotations

import asyncio
import datetime as dt
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest
from pydantic import BaseModel

from corral import Corral, RunContext, Workflow, current_step, step, workflow
from corral.testing import FakeClock

from .golden import export_run, import_run, read_golden, regenerating, write_golden
from .harness import Calls, error_of

CALLS = Calls()
"""Every step body below counts itself here: replaying a golden journal must leave it empty."""


# -- order: a sequence of steps with typed models, ctx.now, ctx.uuid4 and ctx.random ------------


class OrderIn(BaseModel):
    customer: str
    items: list[str]


class Reservation(BaseModel):
    reservation_id: str
    items: list[str]


class Receipt(BaseModel):
    charge_id: str
    amount: int


class OrderOut(BaseModel):
    reservation: Reservation
    receipt: Receipt
    placed_at: dt.datetime
    order_id: str
    lucky: int


@step(name="reserve")
async def reserve(items: list[str]) -> Reservation:
    CALLS.hit("reserve")
    return Reservation(reservation_id=f"res-{len(items)}", items=sorted(items))


@step(name="charge")
async def charge(customer: str, amount: int) -> Receipt:
    CALLS.hit("charge")
    info = current_step()
    assert info is not None
    return Receipt(charge_id=f"ch:{customer}:{info.seq}", amount=amount)


@step(name="charge_card")
async def charge_card(customer: str, amount: int) -> Receipt:
    CALLS.hit("charge_card")
    return Receipt(charge_id=f"card:{customer}", amount=amount)


@workflow(name="golden.order")
async def order(ctx: RunContext, inp: OrderIn) -> OrderOut:
    reservation = await reserve(inp.items)
    receipt = await charge(inp.customer, 10 * len(reservation.items))
    return OrderOut(
        reservation=reservation,
        receipt=receipt,
        placed_at=await ctx.now(),
        order_id=str(ctx.uuid4()),
        lucky=ctx.random.randint(1, 1000),
    )


@workflow(name="golden.order")
async def order_renamed(ctx: RunContext, inp: OrderIn) -> OrderOut:
    """The charge step was renamed since the recording."""
    reservation = await reserve(inp.items)
    receipt = await charge_card(inp.customer, 10 * len(reservation.items))
    return OrderOut(
        reservation=reservation,
        receipt=receipt,
        placed_at=await ctx.now(),
        order_id=str(ctx.uuid4()),
        lucky=ctx.random.randint(1, 1000),
    )


async def drive_order(corral: Corral, clock: FakeClock) -> str:
    handle = await corral.start(order, OrderIn(customer="ada", items=["tea", "bread", "jam"]))
    await corral.run_until_idle()
    return handle.run_id


# -- fan_out: asyncio.gather of different steps ------------------------------------------------


class Briefing(BaseModel):
    city: str
    weather: str
    traffic: int
    events: list[str]


@step(name="weather")
async def weather(city: str) -> str:
    CALLS.hit("weather")
    await asyncio.sleep(0)  # finishes after `traffic`: numbering follows calls, not completions
    await asyncio.sleep(0)
    return f"sunny in {city}"


@step(name="traffic")
async def traffic(city: str) -> int:
    CALLS.hit("traffic")
    return len(city) * 7


@step(name="events")
async def events(city: str) -> list[str]:
    CALLS.hit("events")
    return [f"{city} marathon", f"{city} jazz night"]


@workflow(name="golden.fan_out")
async def fan_out(ctx: RunContext, cities: list[str]) -> list[Briefing]:
    briefings = []
    for name in cities:
        w, t, e = await asyncio.gather(weather(name), traffic(name), events(name))
        briefings.append(Briefing(city=name, weather=w, traffic=t, events=e))
    return briefings


@workflow(name="golden.fan_out")
async def fan_out_reordered(ctx: RunContext, cities: list[str]) -> list[Briefing]:
    """The gather's arguments were reordered since the recording."""
    briefings = []
    for name in cities:
        t, w, e = await asyncio.gather(traffic(name), weather(name), events(name))
        briefings.append(Briefing(city=name, weather=w, traffic=t, events=e))
    return briefings


async def drive_fan_out(corral: Corral, clock: FakeClock) -> str:
    handle = await corral.start(fan_out, ["oslo", "lima"])
    await corral.run_until_idle()
    return handle.run_id


# -- child: run_child and start_child ----------------------------------------------------------


class Square(BaseModel):
    n: int
    square: int


@step(name="square")
async def square(n: int) -> int:
    CALLS.hit("square")
    return n * n


@step(name="prepare")
async def prepare() -> str:
    CALLS.hit("prepare")
    return "prepared"


@workflow(name="golden.child")
async def child(ctx: RunContext, n: int) -> Square:
    return Square(n=n, square=await square(n))


@workflow(name="golden.parent")
async def parent(ctx: RunContext, numbers: list[int]) -> int:
    first = await ctx.run_child(child, numbers[0])
    later = await ctx.start_child(child, numbers[1])
    second = await later.result()
    return int(first.square + second.square)


@workflow(name="golden.parent")
async def parent_changed(ctx: RunContext, numbers: list[int]) -> int:
    """A step was inserted before the first child since the recording."""
    await prepare()
    first = await ctx.run_child(child, numbers[0])
    later = await ctx.start_child(child, numbers[1])
    second = await later.result()
    return int(first.square + second.square)


async def drive_child(corral: Corral, clock: FakeClock) -> str:
    corral.register(child)
    handle = await corral.start(parent, [3, 4])
    await corral.run_until_idle()
    return handle.run_id


# -- approval: a durable timer and a signal ----------------------------------------------------


class Decision(BaseModel):
    approved: bool
    by: str


@step(name="submit")
async def submit(amount: int) -> str:
    CALLS.hit("submit")
    return f"request-{amount}"


@step(name="apply")
async def apply(request: str, decision: Decision) -> str:
    CALLS.hit("apply")
    verdict = "approved" if decision.approved else "rejected"
    return f"{request} {verdict} by {decision.by}"


@workflow(name="golden.approval")
async def approval(ctx: RunContext, amount: int) -> str:
    request = await submit(amount)
    await ctx.sleep(3600)  # a cooling-off hour
    decision = await ctx.wait_for_signal("approve", type_=Decision, timeout=86_400)
    return await apply(request, decision)


@workflow(name="golden.approval")
async def approval_renamed(ctx: RunContext, amount: int) -> str:
    """The signal was renamed since the recording."""
    request = await submit(amount)
    await ctx.sleep(3600)
    decision = await ctx.wait_for_signal("approval", type_=Decision, timeout=86_400)
    return await apply(request, decision)


async def drive_approval(corral: Corral, clock: FakeClock) -> str:
    handle = await corral.start(approval, 250)
    await corral.run_until_idle()
    clock.advance(3600)
    await corral.run_until_idle()
    assert await handle.status() == "waiting"
    clock.advance(60)
    await corral.signal(handle.run_id, "approve", Decision(approved=True, by="grace"))
    await corral.run_until_idle()
    return handle.run_id


# -- the cases ---------------------------------------------------------------------------------


@dataclass(frozen=True)
class Case:
    name: str
    workflows: tuple[Workflow[Any, Any], ...]
    drive: Callable[[Corral, FakeClock], Awaitable[str]]
    kinds: frozenset[str]
    """Step kinds the recorded journal must hold, so a re-recording cannot quietly lose them."""
    changed: Workflow[Any, Any]
    diverges_at: tuple[int, str, str]
    """(seq, recorded, requested) of the NonDeterminismError the changed workflow must raise."""


CASES = [
    Case(
        "order_sequence",
        (order,),
        drive_order,
        frozenset({"step", "now"}),
        order_renamed,
        (2, "step charge", "step charge_card"),
    ),
    Case(
        "fan_out",
        (fan_out,),
        drive_fan_out,
        frozenset({"step"}),
        fan_out_reordered,
        (1, "step weather", "step traffic"),
    ),
    Case(
        "child_run",
        (parent, child),
        drive_child,
        frozenset({"child.start", "child.result"}),
        parent_changed,
        (1, "child.start golden.child", "step prepare"),
    ),
    Case(
        "timer_and_signal",
        (approval,),
        drive_approval,
        frozenset({"step", "sleep", "signal"}),
        approval_renamed,
        (3, "signal approve", "signal approval"),
    ),
]


@pytest.fixture(autouse=True)
def _clear_calls() -> None:
    CALLS.clear()


@pytest.fixture(params=CASES, ids=lambda case: case.name)
async def recorded(request: pytest.FixtureRequest, tmp_path: Path) -> Case:
    """The case, its golden journal re-recorded first when CORRAL_REGENERATE_GOLDEN=1."""
    case: Case = request.param
    if regenerating():
        clock = FakeClock()
        async with Corral(f"sqlite:///{tmp_path / 'record.db'}", clock=clock) as recorder:
            recorder.register(*case.workflows)
            run_id = await case.drive(recorder, clock)
            data = await export_run(recorder.store, run_id)
        assert data["run"]["status"] == "succeeded", data["run"]
        write_golden(case.name, data)
        CALLS.clear()
    return case


async def test_golden_journal_replays_without_running_a_step(
    recorded: Case, corral: Corral, clock: FakeClock
) -> None:
    golden = read_golden(recorded.name)
    assert recorded.kinds <= {s["kind"] for s in golden["steps"]}
    corral.register(*recorded.workflows)

    run_id = await import_run(corral.store, golden, now=clock.now())
    run = await corral.get_run(run_id)
    assert (run.status, run.result) == ("pending", None)

    await corral.run_until_idle()

    run = await corral.get_run(run_id)
    assert run.status == "succeeded", run.error
    assert run.result == golden["run"]["result"]  # byte for byte, uuid4 and random included
    assert CALLS == {}, "a step body ran again on replay"
    journal = await corral.journal(run_id)
    fields = ("seq", "kind", "name", "status", "at_most_once", "detail", "result", "error")
    assert [{f: getattr(s, f) for f in fields} for s in journal] == [
        {f: s[f] for f in fields} for s in golden["steps"]
    ]


async def test_changed_workflow_raises_non_determinism_on_the_golden_journal(
    recorded: Case, corral: Corral
) -> None:
    golden = read_golden(recorded.name)
    corral.register(recorded.changed, *recorded.workflows[1:])

    run_id = await import_run(corral.store, golden, now=corral.clock.now())
    await corral.run_until_idle()

    run = await corral.get_run(run_id)
    assert run.status == "failed"
    error = error_of(run)
    assert error["code"] == "non_determinism"
    assert (error["seq"], error["recorded"], error["requested"]) == recorded.diverges_at
    assert error["run_id"] == run_id
    assert CALLS == {}, "a step body ran on a journal that does not match the code"
