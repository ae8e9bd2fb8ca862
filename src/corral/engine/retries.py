"""What the engine needs to retry a step: a rule that decides, and the record of each attempt.

The engine knows how to *carry out* a retry durably; it does not decide whether one is wise.
A `RetryRule` (for example `corral.reliability.RetryPolicy`) is asked after every failed attempt
and answers with a delay or a refusal. Both answers are journaled:

- a failed attempt that will be retried updates the step's row (still `started`) with the
  attempt's error, its cause and the time of the next attempt (`retry_at`); the run is unloaded
  and a durable timer wakes it then, on any worker. Every attempt has the step's idempotency key.
- a refusal journals the step as failed, with every attempt and the reason for giving up.

Decisions are made once, live; a replay reads them from the journal. So a rule may use wall-clock
jitter, shared counters or a circuit breaker's state without making replay non-deterministic.
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from typing import Any, Protocol


@dataclass(frozen=True, slots=True)
class AttemptFailure:
    """A failed attempt of a step, as a retry rule sees it (one frozen input object)."""

    run_id: str
    seq: int
    step: str
    attempt: int
    """The attempt that failed, from 1."""
    error: BaseException
    first_started_at: float
    """When the first attempt started: rules may bound the total time spent retrying."""
    now: float
    run_retries: int
    """Retries the run has made so far, over all its steps (for a per-run retry budget)."""


@dataclass(frozen=True, slots=True)
class RetryDecision:
    """Try again after `delay` seconds, or (`delay is None`) give up; `reason` is journaled."""

    delay: float | None
    reason: str

    @property
    def retry(self) -> bool:
        return self.delay is not None


class RetryRule(Protocol):
    """Decides whether a failed attempt is tried again. Called live only, never on replay."""

    def decide(self, failure: AttemptFailure) -> RetryDecision: ...


@dataclass(frozen=True, slots=True)
class Attempts:
    """A step's failed attempts so far, as kept in its journal entry's `detail`."""

    history: tuple[dict[str, Any], ...] = ()
    retry_at: float | None = None
    gave_up: str | None = None

    @classmethod
    def load(cls, detail: str | None) -> Attempts:
        if not detail:
            return cls()
        data = json.loads(detail)
        if not isinstance(data, dict):
            return cls()
        return cls(
            history=tuple(data.get("attempts", ())),
            retry_at=data.get("retry_at"),
            gave_up=data.get("gave_up"),
        )

    @property
    def count(self) -> int:
        return len(self.history)

    def failed(self, *, error: dict[str, Any], at: float, decision: RetryDecision) -> Attempts:
        """These attempts and one more that failed with `error`, as `decision` says."""
        entry = {
            "attempt": self.count + 1,
            "at": at,
            "code": error.get("code"),
            "error": f"{error.get('type')}: {error.get('message')}",
            "decision": decision.reason,
        }
        if decision.delay is not None:
            entry["retry_at"] = at + decision.delay
            return Attempts((*self.history, entry), retry_at=at + decision.delay)
        return Attempts((*self.history, entry), gave_up=decision.reason)

    def dump(self, extra: dict[str, Any] | None = None) -> str:
        data: dict[str, Any] = dict(extra or {})
        if self.history:
            data["attempts"] = list(self.history)
        if self.retry_at is not None:
            data["retry_at"] = self.retry_at
        if self.gave_up is not None:
            data["gave_up"] = self.gave_up
        return json.dumps(data)


def retries_in(detail: str | None) -> int:
    """How many retries a journal entry's `detail` records (its failed attempts that were
    retried), for counting a run's retries on replay."""
    if not detail or '"attempts"' not in detail:
        return 0
    attempts = Attempts.load(detail)
    return sum(1 for entry in attempts.history if "retry_at" in entry)


__all__ = ["AttemptFailure", "Attempts", "RetryDecision", "RetryRule", "retries_in"]
