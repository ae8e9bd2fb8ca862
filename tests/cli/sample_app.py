"""Workflows the CLI tests drive: typed input, a signal wait, a timer, a failure, a child run,
and a slow run to stop a worker in the middle of.

Loaded with `--app tests.cli.sample_app` (every workflow at top level) or by reference
(`tests.cli.sample_app:greet`).
"""

from __future__ import annotations

import asyncio
from typing import Any

from pydantic import BaseModel

from corral import Corral, RunContext, workflow
from corral.errors import RetryStep
from corral.reliability import RetryPolicy


class GreetIn(BaseModel):
    name: str
    times: int = 1


class GreetOut(BaseModel):
    greeting: str


async def make_greeting(name: str, times: int) -> str:
    return " ".join([f"hello {name}"] * times)


async def tick(i: int) -> int:
    await asyncio.sleep(0.1)
    return i


async def explode(reason: str) -> str:
    raise ValueError(f"kaboom: {reason}")


@workflow
async def greet(ctx: RunContext, inp: GreetIn) -> GreetOut:
    text: str = await ctx.step(make_greeting, inp.name, inp.times, name="make_greeting")
    return GreetOut(greeting=text)


@workflow
async def approval(ctx: RunContext, inp: dict[str, Any]) -> dict[str, Any]:
    """Waits for signal `approve`; its data decides the result."""
    decision = await ctx.wait_for_signal("approve")
    return {"request": inp, "decision": decision}


@workflow
async def nap(ctx: RunContext, seconds: float) -> str:
    await ctx.sleep(seconds)
    return "rested"


@workflow
async def boom(ctx: RunContext, reason: str) -> str:
    # (Annotated through the return: mypy infers ctx.step's result type from its context.)
    return await ctx.step(explode, reason, name="explode")


@workflow
async def count(ctx: RunContext, n: int) -> int:
    """`n` steps of 0.1s each: long enough to stop a worker in the middle of it."""
    total = 0
    for i in range(n):
        value: int = await ctx.step(tick, i, name=f"tick-{i}")
        total += value
    return total


@workflow
async def parent(ctx: RunContext, name: str) -> str:
    out = await ctx.run_child(greet, {"name": name, "times": 2})
    return str(out.greeting).upper()


# `--app tests.cli.sample_app:corral` takes the workflows of this instance (only `greet`);
# `--app tests.cli.sample_app:pair` a list of workflows.
corral = Corral("sqlite:///unused-by-the-cli.db", workflows=[greet])
pair = [greet, boom]


async def send_wire(amount: int) -> str:
    return f"wired {amount}"


@workflow
async def wire(ctx: RunContext, amount: int) -> str:
    """An at-most-once step: a crash while it is in flight stops the run for a person."""
    return await ctx.step(send_wire, amount, name="send_wire", at_most_once=True)


async def reserve_stock(item: str) -> str:
    return f"{item}-reservation"


async def release_stock(reservation: str) -> None:
    return None


@workflow
async def reserve(ctx: RunContext, item: str) -> str:
    """A compensable step, then a wait: cancelling it releases the stock first."""
    await ctx.step(reserve_stock, item, name="reserve_stock", compensate=release_stock)
    return str(await ctx.wait_for_signal("paid"))


_flaky_calls: dict[str, int] = {}


async def flaky_lookup(key: str) -> str:
    _flaky_calls[key] = _flaky_calls.get(key, 0) + 1
    if _flaky_calls[key] == 1:
        raise RetryStep("the lookup service answered 503")
    return f"found {key}"


@workflow
async def flaky(ctx: RunContext, key: str) -> str:
    """A step that fails once with a passing error and is retried after a durable timer."""
    return await ctx.step(
        flaky_lookup, key, name="lookup", retry=RetryPolicy(initial_delay=0, jitter=0)
    )
