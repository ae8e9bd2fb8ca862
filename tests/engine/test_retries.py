"""Durable retries: each failed attempt is journaled with its cause, the wait is a durable timer,
and every attempt carries the step's idempotency key. Time is virtual throughout."""

from __future__ import annotations

import asyncio
import json
from dataclasses import dataclass, field

import pytest

from corral import Corral, RunContext, current_step
from corral.engine import AttemptFailure, RetryDecision, execute_run
from corral.errors import RetryStep, StepFailed, ToolArgumentsInvalid
from corral.store import Store
from corral.testing import FakeClock

from .harness import Crash, error_of


@dataclass
class EveryFewSeconds:
    """A retry rule for these tests: `attempts` in all, `delay` seconds apart, and only for
    `RetryStep`; it remembers every failure it was asked about."""

    attempts: int = 3
    delay: float = 5.0
    asked: list[AttemptFailure] = field(default_factory=list)

    def decide(self, failure: AttemptFailure) -> RetryDecision:
        self.asked.append(failure)
        if not isinstance(failure.error, RetryStep):
            return RetryDecision(None, f"not retryable: {type(failure.error).__name__}")
        if failure.attempt >= self.attempts:
            return RetryDecision(None, f"{failure.attempt} of {self.attempts} attempts failed")
        return RetryDecision(self.delay, f"retry {failure.attempt + 1} in {self.delay:g}s")


async def test_a_retried_step_waits_durably_and_keeps_its_key(
    corral: Corral, clock: FakeClock
) -> None:
    rule = EveryFewSeconds()
    keys: list[tuple[str, int, bool]] = []

    async def charge() -> str:
        step = current_step()
        assert step is not None
        keys.append((step.idempotency_key, step.attempt, step.redelivered))
        if len(keys) < 3:
            raise RetryStep("the payment API answered 503")
        return "charged"

    @corral.workflow
    async def pay(ctx: RunContext, _: None) -> str:
        return await ctx.step(charge, name="charge", retry=rule)

    handle = await corral.start(pay)
    assert (await corral.run_until_idle()).outcomes == {"waiting": 1}
    run = await handle.get()
    assert run.wake_at == clock.now() + 5
    [row] = await corral.journal(handle.run_id)
    assert row.status == "started"
    detail = json.loads(row.detail or "{}")
    assert detail["retry_at"] == clock.now() + 5
    assert [a["code"] for a in detail["attempts"]] == ["retry_step"]
    assert "503" in detail["attempts"][0]["error"]
    assert json.loads(row.error or "{}")["code"] == "retry_step"

    clock.advance(4)  # not yet: the timer is durable, not a poll
    assert (await corral.run_until_idle()).claimed == 0
    clock.advance(1)
    assert (await corral.run_until_idle()).outcomes == {"waiting": 1}
    clock.advance(5)
    await corral.run_until_idle()
    assert await handle.wait_for_result(timeout=5) == "charged"

    key = f"{handle.run_id}:1"
    assert keys == [(key, 1, False), (key, 2, True), (key, 3, True)]
    [row] = await corral.journal(handle.run_id)
    assert row.status == "succeeded"
    assert len(json.loads(row.detail or "{}")["attempts"]) == 2  # kept on success
    assert [f.run_retries for f in rule.asked] == [0, 1]


async def test_giving_up_journals_every_attempt_and_the_reason(
    corral: Corral, clock: FakeClock
) -> None:
    rule = EveryFewSeconds(attempts=2, delay=1)

    async def always_busy() -> None:
        raise RetryStep("still busy")

    @corral.workflow
    async def busy(ctx: RunContext, _: None) -> None:
        await ctx.step(always_busy, name="busy", retry=rule)

    handle = await corral.start(busy)
    await corral.run_until_idle()
    clock.advance(1)
    await corral.run_until_idle()
    run = await handle.get()
    assert run.status == "failed"
    assert error_of(run)["code"] == "step_failed"
    [row] = await corral.journal(handle.run_id)
    detail = json.loads(row.detail or "{}")
    assert detail["gave_up"] == "2 of 2 attempts failed"
    assert [a["attempt"] for a in detail["attempts"]] == [1, 2]


async def test_errors_the_rule_refuses_fail_at_once(corral: Corral) -> None:
    rule = EveryFewSeconds()

    async def bad_arguments() -> None:
        raise ToolArgumentsInvalid("amount must be positive", tool="refund")

    @corral.workflow
    async def bad(ctx: RunContext, _: None) -> str:
        try:
            await ctx.step(bad_arguments, name="refund", retry=rule)
        except StepFailed as exc:
            return str(exc.ids["error_type"])
        return "no error"

    handle = await corral.start(bad)
    await corral.run_until_idle()
    assert await handle.wait_for_result(timeout=5) == "ToolArgumentsInvalid"
    [row] = await corral.journal(handle.run_id)
    assert json.loads(row.detail or "{}")["gave_up"] == "not retryable: ToolArgumentsInvalid"


async def test_at_most_once_steps_are_never_retried(corral: Corral) -> None:
    rule = EveryFewSeconds()
    calls: list[int] = []

    async def wire_money() -> None:
        calls.append(1)
        raise RetryStep("timeout after sending")

    @corral.workflow
    async def wire(ctx: RunContext, _: None) -> None:
        await ctx.step(wire_money, name="wire", retry=rule, at_most_once=True)

    handle = await corral.start(wire)
    await corral.run_until_idle()
    assert (await handle.get()).status == "failed"
    assert calls == [1]
    assert rule.asked == []


async def test_a_crash_during_a_retry_resumes_with_the_attempts_so_far(
    corral: Corral, store: Store, clock: FakeClock
) -> None:
    """Attempt 1 fails and is journaled; the worker dies during attempt 2; the worker that takes
    the run over makes attempt 2 again (not 1, not 3), with the same key."""
    rule = EveryFewSeconds()
    seen: list[tuple[int, str]] = []

    async def flaky() -> str:
        step = current_step()
        assert step is not None
        seen.append((step.attempt, step.idempotency_key))
        await asyncio.sleep(0)
        if len(seen) == 1:
            raise RetryStep("first try fails")
        if len(seen) == 2:
            raise Crash  # the process dies in attempt 2
        return "ok"

    @corral.workflow
    async def resumes(ctx: RunContext, _: None) -> str:
        return await ctx.step(flaky, name="flaky", retry=rule)

    handle = await corral.start(resumes)
    await corral.run_until_idle()
    clock.advance(5)
    [run] = await store.claim_runs(worker_id="doomed", limit=1, now=clock.now(), lease_ttl=30)
    with pytest.raises(Crash):
        await execute_run(run, store=store, clock=clock, workflows=corral.workflows)
    clock.advance(31)
    await corral.run_until_idle()
    assert await handle.wait_for_result(timeout=5) == "ok"
    key = f"{handle.run_id}:1"
    assert seen == [(1, key), (2, key), (2, key)]


@pytest.mark.parametrize("delay", [0.0, 0.5])
async def test_short_delays_are_still_durable_timers(
    corral: Corral, clock: FakeClock, delay: float
) -> None:
    rule = EveryFewSeconds(delay=delay)
    attempts: list[int] = []

    async def twice() -> int:
        attempts.append(1)
        if len(attempts) == 1:
            raise RetryStep("once")
        return len(attempts)

    @corral.workflow
    async def short(ctx: RunContext, _: None) -> int:
        return await ctx.step(twice, name="twice", retry=rule)

    handle = await corral.start(short)
    await corral.run_until_idle()
    clock.advance(delay)
    await corral.run_until_idle()
    assert await handle.wait_for_result(timeout=5) == 2


async def test_a_step_can_journal_what_it_was_called_with(corral: Corral) -> None:
    async def lookup(order_id: str) -> str:
        return f"found {order_id}"

    @corral.workflow
    async def find(ctx: RunContext, _: None) -> str:
        return await ctx.step(lookup, "A-1", name="lookup", record={"order_id": "A-1"})

    handle = await corral.start(find)
    await corral.run_until_idle()
    assert await handle.wait_for_result(timeout=5) == "found A-1"
    [row] = await corral.journal(handle.run_id)
    assert json.loads(row.detail or "{}") == {"input": {"order_id": "A-1"}}
