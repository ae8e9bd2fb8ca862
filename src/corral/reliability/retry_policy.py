"""Retry policies: when a failed step is tried again, and after how long.

A `RetryPolicy` is the engine's `RetryRule` (`corral.engine.retries`): after each failed attempt
of a step, the engine asks it, journals the answer, and carries a retry out as a durable timer,
so a retry waits in the database, not in a worker's memory. The policy retries only *transient*
failures (`corral.reliability.classify`), with capped exponential backoff and jitter, within
four bounds, checked in this order:

1. `max_attempts` of the step (the first attempt included);
2. `run_budget`: the retries of the whole run, over all its steps;
3. `max_elapsed`: the time since the step's first attempt, including the next wait;
4. for a policy `bound` to a dependency, that dependency's shared retry budget
   (`corral.reliability.retry_budgets`): retries across every run of the worker stay a small
   fraction of the calls made to it, so an outage does not multiply the load on it.

Decisions are made once, live, and replayed from the journal, so jitter may be random.

```python
await ctx.step(fetch, order_id, retry=RetryPolicy(max_attempts=5, max_elapsed=600))
await ctx.step(call_model, request, retry=RetryPolicy().bound(deps.get("openai")))
```
"""

from __future__ import annotations

import math
import random
from dataclasses import dataclass, field
from typing import NoReturn

from corral.engine.retries import AttemptFailure, RetryDecision, RetryRule
from corral.errors import CircuitOpen, UsageError
from corral.reliability.classify import Transient, transient
from corral.reliability.dependencies import Dependency


@dataclass(frozen=True)
class RetryPolicy:
    """Retry transient failures with capped exponential backoff and jitter.

    The wait after failed attempt `n` is `min(max_delay, initial_delay * multiplier**(n-1))`,
    multiplied by a random factor in `[1 - jitter, 1 + jitter]` (so callers failing together do
    not retry together). A dependency that says when to come back (a `Retry-After`, an open
    breaker's `retry_after`) is believed: the wait is at least that long, even past `max_delay`;
    `max_elapsed` still bounds the whole.

    Attributes:
        max_attempts: Attempts in all, the first included (1: never retry).
        initial_delay: Seconds before the first retry (before jitter).
        multiplier: Growth of the wait from one retry to the next (>= 1).
        max_delay: Cap of the wait before jitter, in seconds.
        jitter: Spread of the random factor (0: none; at most 1).
        max_elapsed: Give up rather than start an attempt more than this many seconds after
            the step's first one (None: no limit).
        run_budget: Give up once the run has made this many retries over all its steps
            (None: no limit).
        retry_on: Further exception types to retry, besides the transient ones.
        never_retry: Exception types never to retry, whatever else says.
        rng: The source of jitter (seed one for repeatable waits).
    """

    max_attempts: int = 3
    initial_delay: float = 1.0
    multiplier: float = 2.0
    max_delay: float = 60.0
    jitter: float = 0.2
    max_elapsed: float | None = None
    run_budget: int | None = 20
    retry_on: tuple[type[BaseException], ...] = ()
    never_retry: tuple[type[BaseException], ...] = ()
    rng: random.Random = field(default_factory=random.Random, repr=False, compare=False)

    def __post_init__(self) -> None:
        if not _count(self.max_attempts) or self.max_attempts < 1:
            _invalid("max_attempts", "an int >= 1", self.max_attempts)
        if not _number(self.initial_delay) or self.initial_delay < 0:
            _invalid("initial_delay", "a number of seconds >= 0", self.initial_delay)
        if not _number(self.multiplier) or self.multiplier < 1:
            _invalid("multiplier", "a number >= 1", self.multiplier)
        if not _number(self.max_delay) or self.max_delay < self.initial_delay:
            _invalid("max_delay", "a number of seconds >= initial_delay", self.max_delay)
        if not _number(self.jitter) or not 0 <= self.jitter <= 1:
            _invalid("jitter", "a number from 0 to 1", self.jitter)
        if self.max_elapsed is not None and (
            not _number(self.max_elapsed) or self.max_elapsed <= 0
        ):
            _invalid("max_elapsed", "a positive number of seconds, or None", self.max_elapsed)
        if self.run_budget is not None and (not _count(self.run_budget) or self.run_budget < 0):
            _invalid("run_budget", "an int >= 0, or None", self.run_budget)
        for name in ("retry_on", "never_retry"):
            value = getattr(self, name)
            if not isinstance(value, tuple) or not all(
                isinstance(t, type) and issubclass(t, BaseException) for t in value
            ):
                _invalid(name, "a tuple of exception classes", value)

    def decide(self, failure: AttemptFailure) -> RetryDecision:
        """Whether to retry `failure`'s step, and when (the engine's `RetryRule`)."""
        return self._decide(failure, None)

    def bound(self, dependency: Dependency) -> RetryRule:
        """This policy, also bounded by `dependency`'s retry budget, shared by every run of the
        worker: a retry is refused once that budget is spent, and charged to it otherwise.

        Use it for steps that call the dependency (through `dependency.call`, so that the
        budget counts the calls); retries of an open breaker's `CircuitOpen` are not charged,
        since they did not reach the dependency.
        """
        return _BoundRetryPolicy(self, dependency)

    def backoff(self, attempt: int) -> float:
        """The wait after failed attempt `attempt` (from 1), jitter included."""
        try:
            grown = self.initial_delay * float(self.multiplier) ** max(attempt - 1, 0)
        except OverflowError:
            grown = math.inf if self.initial_delay > 0 else 0.0
        base = min(float(self.max_delay), grown)
        if self.jitter == 0:
            return base
        return base * self.rng.uniform(1 - self.jitter, 1 + self.jitter)

    def _decide(self, failure: AttemptFailure, dependency: Dependency | None) -> RetryDecision:
        error = failure.error
        passing = self._transient(error, failure.now)
        if passing is None:
            return RetryDecision(None, f"not retryable: {type(error).__name__}")
        if failure.attempt >= self.max_attempts:
            return RetryDecision(None, f"{failure.attempt} of {self.max_attempts} attempts failed")
        if self.run_budget is not None and failure.run_retries >= self.run_budget:
            return RetryDecision(None, f"the run's retry budget ({self.run_budget}) is spent")
        delay = self.backoff(failure.attempt)
        asked = passing.retry_after is not None and passing.retry_after > delay
        delay = max(delay, passing.retry_after or 0.0)
        if self.max_elapsed is not None:
            elapsed = failure.now + delay - failure.first_started_at
            if elapsed > self.max_elapsed:
                return RetryDecision(
                    None,
                    f"a retry in {delay:.1f}s would pass max_elapsed ({self.max_elapsed:g}s)",
                )
        if (
            dependency is not None
            and not isinstance(error, CircuitOpen)
            and not dependency.retry_budget.try_spend()
        ):
            return RetryDecision(None, f"the retry budget of {dependency.key} is spent")
        return RetryDecision(
            delay,
            f"retry {failure.attempt + 1} of {self.max_attempts} in {delay:.1f}s"
            f"{' as asked' if asked else ''}: {passing.reason} (transient)",
        )

    def _transient(self, error: BaseException, now: float) -> Transient | None:
        if self.never_retry and isinstance(error, self.never_retry):
            return None
        passing = transient(error, now=now)
        if passing is None and self.retry_on and isinstance(error, self.retry_on):
            return Transient(type(error).__name__)
        return passing


@dataclass(frozen=True, slots=True)
class _BoundRetryPolicy:
    """A `RetryPolicy` that also consults (and charges) a dependency's retry budget."""

    policy: RetryPolicy
    dependency: Dependency

    def decide(self, failure: AttemptFailure) -> RetryDecision:
        return self.policy._decide(failure, self.dependency)


def _number(value: object) -> bool:
    """A finite int or float (not a bool)."""
    return isinstance(value, int | float) and not isinstance(value, bool) and math.isfinite(value)


def _count(value: object) -> bool:
    return isinstance(value, int) and not isinstance(value, bool)


def _invalid(name: str, expected: str, value: object) -> NoReturn:
    raise UsageError(f"RetryPolicy.{name} must be {expected}, not {value!r}", field=name)


NO_RETRY = RetryPolicy(max_attempts=1)
"""A policy that never retries (each failure is journaled as it happens)."""


__all__ = ["NO_RETRY", "RetryPolicy"]
