"""`RetryPolicy` in real runs: the engine journals each attempt with the policy's decision, and
waits between attempts as durable timers (virtual time, both store backends)."""

from __future__ import annotations

import json
from typing import Any

from corral import Corral, RunContext
from corral.errors import ModelCallFailed, RetryStep
from corral.reliability import BreakerConfig, Dependencies, RetryPolicy
from corral.testing import FakeClock


def attempts_of(detail: str | None) -> list[dict[str, Any]]:
    data: dict[str, Any] = json.loads(detail or "{}")
    return list(data.get("attempts", []))


async def test_a_flaky_step_is_retried_after_backoff_then_succeeds(
    corral: Corral, clock: FakeClock
) -> None:
    calls = 0

    async def post_to_ledger() -> str:
        nonlocal calls
        calls += 1
        if calls <= 2:
            raise RetryStep(f"the ledger is locked (try {calls})")
        return "posted"

    policy = RetryPolicy(max_attempts=3, initial_delay=10, jitter=0)

    @corral.workflow
    async def post(ctx: RunContext, _: None) -> str:
        return await ctx.step(post_to_ledger, name="post", retry=policy)

    start = clock.now()
    handle = await corral.start(post)
    assert (await corral.run_until_idle()).outcomes == {"waiting": 1}
    assert (await handle.get()).wake_at == start + 10
    [row] = await corral.journal(handle.run_id)
    assert row.status == "started"
    [first] = attempts_of(row.detail)
    assert first["decision"] == "retry 2 of 3 in 10.0s: the ledger is locked (try 1) (transient)"

    clock.advance(9.5)
    assert (await corral.run_until_idle()).claimed == 0  # a durable timer: not yet
    clock.advance(0.5)
    assert (await corral.run_until_idle()).outcomes == {"waiting": 1}
    assert (await handle.get()).wake_at == start + 10 + 20  # the backoff doubled
    clock.advance(20)
    await corral.run_until_idle()
    assert await handle.wait_for_result(timeout=5) == "posted"

    assert calls == 3
    [row] = await corral.journal(handle.run_id)
    assert row.status == "succeeded"
    attempts = attempts_of(row.detail)
    assert [(a["attempt"], a["code"], a["error"]) for a in attempts] == [
        (1, "retry_step", "RetryStep: the ledger is locked (try 1)"),
        (2, "retry_step", "RetryStep: the ledger is locked (try 2)"),
    ]
    assert attempts[1]["decision"] == (
        "retry 3 of 3 in 20.0s: the ledger is locked (try 2) (transient)"
    )
    assert [a["retry_at"] for a in attempts] == [start + 10, start + 30]


async def test_a_policy_gives_up_and_the_step_fails_with_its_reason(
    corral: Corral, clock: FakeClock
) -> None:
    async def overloaded() -> str:
        raise ModelCallFailed("HTTP 503 from the provider", status=503, retryable=True)

    @corral.workflow
    async def ask(ctx: RunContext, _: None) -> str:
        return await ctx.step(
            overloaded, name="model", retry=RetryPolicy(max_attempts=2, initial_delay=1, jitter=0)
        )

    handle = await corral.start(ask)
    await corral.run_until_idle()
    clock.advance(1)
    await corral.run_until_idle()
    run = await handle.get()
    assert run.status == "failed"
    [row] = await corral.journal(handle.run_id)
    detail = json.loads(row.detail or "{}")
    assert detail["gave_up"] == "2 of 2 attempts failed"
    assert [a["decision"] for a in detail["attempts"]] == [
        "retry 2 of 2 in 1.0s: HTTP 503 (transient)",
        "2 of 2 attempts failed",
    ]


async def test_an_open_breaker_makes_the_run_wait_until_it_tries_again(
    corral: Corral, clock: FakeClock
) -> None:
    """The agents layer's pattern: a step calls a dependency through its breaker under a policy
    bound to it. While the breaker is open, the run waits (durably) for `retry_after`."""
    deps = Dependencies(clock=clock)
    provider = deps.get(
        "provider", breaker=BreakerConfig(min_calls=1, open_for=60, half_open_probes=1)
    )
    healthy = False

    async def complete() -> str:
        if not healthy:
            raise ModelCallFailed("HTTP 502", status=502, retryable=True)
        return "an answer"

    async def call_model() -> str:
        return await provider.call(complete)

    policy = RetryPolicy(max_attempts=5, initial_delay=1, jitter=0).bound(provider)

    @corral.workflow
    async def ask(ctx: RunContext, _: None) -> str:
        return await ctx.step(call_model, name="model", retry=policy)

    start = clock.now()
    handle = await corral.start(ask)
    await corral.run_until_idle()  # attempt 1 fails: the breaker opens; retry in 1 s
    assert provider.breaker.snapshot().state == "open"
    clock.advance(1)
    await corral.run_until_idle()  # attempt 2 is refused by the breaker: wait until it probes
    assert (await handle.get()).wake_at == start + 60
    assert provider.retry_budget.retries == 1  # the refused attempt cost no budget
    healthy = True
    clock.advance(59)
    await corral.run_until_idle()
    assert await handle.wait_for_result(timeout=5) == "an answer"
    assert provider.breaker.snapshot().state == "closed"
    [row] = await corral.journal(handle.run_id)
    decisions = [a["decision"] for a in attempts_of(row.detail)]
    assert decisions == [
        "retry 2 of 5 in 1.0s: HTTP 502 (transient)",
        "retry 3 of 5 in 59.0s as asked: circuit of provider open (transient)",
    ]
