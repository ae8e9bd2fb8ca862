"""`RetryPolicy.decide`: backoff, jitter, Retry-After, and each bound it gives up at, in order."""

from __future__ import annotations

import math
import random
from typing import Any

import pytest

from corral.engine import AttemptFailure, RetryRule
from corral.errors import (
    CircuitOpen,
    ModelCallFailed,
    PolicyDenied,
    RetryStep,
    ToolArgumentsInvalid,
    UsageError,
)
from corral.reliability import (
    NO_RETRY,
    Dependencies,
    RetryBudgetConfig,
    RetryPolicy,
)
from corral.testing import FakeClock

T0 = 1_700_000_000.0


def failure(
    error: BaseException | None = None,
    *,
    attempt: int = 1,
    now: float = T0,
    first: float = T0,
    run_retries: int = 0,
) -> AttemptFailure:
    return AttemptFailure(
        run_id="run-1",
        seq=1,
        step="charge",
        attempt=attempt,
        error=RetryStep("the ledger is locked") if error is None else error,
        first_started_at=first,
        now=now,
        run_retries=run_retries,
    )


def test_backoff_doubles_up_to_max_delay_without_jitter() -> None:
    policy = RetryPolicy(max_attempts=10, initial_delay=1, max_delay=10, jitter=0)
    delays = [policy.decide(failure(attempt=n)).delay for n in range(1, 7)]
    assert delays == [1, 2, 4, 8, 10, 10]
    first = policy.decide(failure())
    assert first.retry
    assert first.reason == "retry 2 of 10 in 1.0s: the ledger is locked (transient)"


def test_a_huge_attempt_number_waits_max_delay() -> None:
    policy = RetryPolicy(max_attempts=100_000, multiplier=10, jitter=0, run_budget=None)
    assert policy.decide(failure(attempt=50_000)).delay == 60.0


def test_jitter_spreads_delays_within_its_bounds() -> None:
    policy = RetryPolicy(initial_delay=1, jitter=0.2, rng=random.Random(7))
    delays = [policy.backoff(2) for _ in range(400)]  # base 2.0s
    assert all(1.6 <= d <= 2.4 for d in delays)
    assert min(delays) < 1.7
    assert max(delays) > 2.3  # spread over the whole range, not a constant


def test_a_seeded_rng_repeats_its_delays() -> None:
    one = RetryPolicy(rng=random.Random(3))
    two = RetryPolicy(rng=random.Random(3))
    assert [one.backoff(n) for n in range(1, 6)] == [two.backoff(n) for n in range(1, 6)]
    assert one == two  # the rng is not part of a policy's identity


def test_retry_after_wins_over_backoff_and_max_delay() -> None:
    policy = RetryPolicy(max_delay=10, jitter=0)
    limited = ModelCallFailed("rate limited", status=429, retryable=True, retry_after=30.0)
    decision = policy.decide(failure(limited))
    assert decision.delay == 30.0
    assert decision.reason == "retry 2 of 3 in 30.0s as asked: HTTP 429 (transient)"
    soon = ModelCallFailed("rate limited", status=429, retryable=True, retry_after=0.2)
    assert policy.decide(failure(soon)).delay == 1.0  # the backoff is longer: it stands


def test_an_open_circuit_is_retried_after_it_says() -> None:
    policy = RetryPolicy(jitter=0)
    circuit = CircuitOpen("open", dependency="openai", state="open", retry_after=25.0)
    decision = policy.decide(failure(circuit))
    assert decision.delay == 25.0
    assert "circuit of openai open" in decision.reason


def test_attempts_run_out() -> None:
    policy = RetryPolicy(max_attempts=3)
    assert policy.decide(failure(attempt=2)).retry
    gave_up = policy.decide(failure(attempt=3))
    assert (gave_up.delay, gave_up.reason) == (None, "3 of 3 attempts failed")
    assert NO_RETRY.decide(failure()).reason == "1 of 1 attempts failed"


def test_the_runs_retry_budget_runs_out() -> None:
    policy = RetryPolicy(max_attempts=5, run_budget=4)
    assert policy.decide(failure(run_retries=3)).retry
    spent = policy.decide(failure(run_retries=4))
    assert (spent.delay, spent.reason) == (None, "the run's retry budget (4) is spent")
    unbounded = RetryPolicy(run_budget=None)
    assert unbounded.decide(failure(run_retries=10_000)).retry


def test_max_elapsed_counts_the_next_wait() -> None:
    policy = RetryPolicy(max_attempts=10, initial_delay=2, multiplier=1, jitter=0, max_elapsed=10)
    assert policy.decide(failure(now=T0 + 8)).delay == 2  # next attempt at +10: allowed
    late = policy.decide(failure(now=T0 + 8.5))
    assert late.delay is None
    assert late.reason == "a retry in 2.0s would pass max_elapsed (10s)"


def test_a_retry_after_beyond_max_elapsed_gives_up() -> None:
    policy = RetryPolicy(max_elapsed=60)
    limited = ModelCallFailed("rate limited", status=429, retryable=True, retry_after=3600.0)
    assert policy.decide(failure(limited)).delay is None


@pytest.mark.parametrize(
    "error",
    [ValueError("bad"), PolicyDenied("no"), ToolArgumentsInvalid("not json")],
    ids=lambda e: type(e).__name__,
)
def test_errors_that_are_not_passing_are_not_retried(error: BaseException) -> None:
    decision = RetryPolicy().decide(failure(error))
    assert (decision.delay, decision.reason) == (None, f"not retryable: {type(error).__name__}")


def test_retry_on_adds_types_and_never_retry_removes_them() -> None:
    class Flaky(Exception):
        pass

    assert not RetryPolicy().decide(failure(Flaky())).retry
    extra = RetryPolicy(retry_on=(Flaky,), jitter=0).decide(failure(Flaky()))
    assert extra.reason == "retry 2 of 3 in 1.0s: Flaky (transient)"
    never = RetryPolicy(never_retry=(RetryStep,), retry_on=(RetryStep,))
    assert never.decide(failure()).reason == "not retryable: RetryStep"


def test_a_bound_policy_spends_the_dependencys_shared_budget() -> None:
    deps = Dependencies(clock=FakeClock(T0))
    ledger = deps.get("ledger", retry_budget=RetryBudgetConfig(min_retries=2, ratio=0.0))
    rule: RetryRule = RetryPolicy(max_attempts=5).bound(ledger)
    # Two different runs share the budget: it is per dependency, not per step.
    assert rule.decide(failure()).retry
    assert rule.decide(failure(attempt=2)).retry
    spent = rule.decide(failure())
    assert (spent.delay, spent.reason) == (None, "the retry budget of ledger is spent")
    assert ledger.retry_budget.retries == 2
    # The unbound policy knows nothing of it.
    assert RetryPolicy(max_attempts=5).decide(failure()).retry


def test_a_bound_policy_charges_only_retries_it_makes() -> None:
    deps = Dependencies(clock=FakeClock(T0))
    ledger = deps.get("ledger", retry_budget=RetryBudgetConfig(min_retries=1, ratio=0.0))
    rule = RetryPolicy(max_attempts=2).bound(ledger)
    assert not rule.decide(failure(ValueError("bad"))).retry
    assert not rule.decide(failure(attempt=2)).retry
    assert ledger.retry_budget.retries == 0
    # A breaker's refusal never reached the dependency: retrying it costs nothing.
    circuit = CircuitOpen("open", dependency="ledger", state="open", retry_after=5.0)
    assert rule.decide(failure(circuit)).retry
    assert ledger.retry_budget.retries == 0
    assert rule.decide(failure()).retry
    assert ledger.retry_budget.retries == 1


@pytest.mark.parametrize(
    ("options", "field"),
    [
        ({"max_attempts": 0}, "max_attempts"),
        ({"max_attempts": True}, "max_attempts"),
        ({"max_attempts": 2.5}, "max_attempts"),
        ({"initial_delay": -1}, "initial_delay"),
        ({"initial_delay": math.nan}, "initial_delay"),
        ({"multiplier": 0.5}, "multiplier"),
        ({"initial_delay": 5, "max_delay": 2}, "max_delay"),
        ({"max_delay": math.inf}, "max_delay"),
        ({"jitter": 1.5}, "jitter"),
        ({"jitter": -0.1}, "jitter"),
        ({"max_elapsed": 0}, "max_elapsed"),
        ({"run_budget": -1}, "run_budget"),
        ({"retry_on": (int,)}, "retry_on"),
        ({"retry_on": [ValueError]}, "retry_on"),
        ({"never_retry": ValueError}, "never_retry"),
    ],
)
def test_bad_settings_are_refused_naming_the_field(options: dict[str, Any], field: str) -> None:
    with pytest.raises(UsageError, match=rf"RetryPolicy\.{field} must be") as raised:
        RetryPolicy(**options)
    assert raised.value.ids["field"] == field
