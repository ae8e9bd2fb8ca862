"""Retry budgets: retries to a dependency stay a small fraction of the calls made to it.

A retry policy bounds the retries of one step; it cannot bound what every run does at once. When
a dependency goes down, each of a thousand runs retrying three times multiplies the load on it by
three just when it can least take it. A `RetryBudget` is shared by every run of a worker process
(through `corral.reliability.Dependencies`) and allows a retry only while the retries of the last
`window` seconds are fewer than `ratio` of the calls of that window, with a floor of
`min_retries` so that a quiet dependency can still be retried. This is Finagle's `RetryBudget`
and gRPC's retry throttling: during an outage the extra load is at most `ratio`, not x attempts.

Counts are kept in a `SlidingWindow` of small time buckets, so memory stays bounded however busy
the dependency is.
"""

from __future__ import annotations

import math
from collections import deque
from dataclasses import dataclass

from corral.engine.clock import Clock
from corral.errors import UsageError

BUCKETS_PER_WINDOW = 1000
"""Resolution of a `SlidingWindow`: an event leaves it at most window/1000 seconds early."""


class SlidingWindow:
    """Counts of two kinds of event (e.g. calls and failures) over the last `span` seconds.

    Events are grouped into buckets `span / BUCKETS_PER_WINDOW` wide, so memory is bounded by
    the number of buckets, not of events; an event leaves the window when its bucket's first
    event is `span` seconds old. Time must not go backwards (it comes from one clock).
    """

    def __init__(self, span: float) -> None:
        self.span = span
        self._resolution = span / BUCKETS_PER_WINDOW
        # Each bucket is [first event's time, count of the first kind, count of the second].
        self._buckets: deque[list[float]] = deque()
        self._first = 0
        self._second = 0

    def add(self, now: float, *, first: int = 0, second: int = 0) -> None:
        """Count `first` and `second` events happening at `now`."""
        self._expire(now)
        if self._buckets and now - self._buckets[-1][0] < self._resolution:
            bucket = self._buckets[-1]
            bucket[1] += first
            bucket[2] += second
        else:
            self._buckets.append([now, first, second])
        self._first += first
        self._second += second

    def totals(self, now: float) -> tuple[int, int]:
        """The counts of both kinds of event in the window ending at `now`."""
        self._expire(now)
        return self._first, self._second

    def clear(self) -> None:
        self._buckets.clear()
        self._first = self._second = 0

    def _expire(self, now: float) -> None:
        horizon = now - self.span
        while self._buckets and self._buckets[0][0] <= horizon:
            _, first, second = self._buckets.popleft()
            self._first -= int(first)
            self._second -= int(second)


@dataclass(frozen=True, slots=True)
class RetryBudgetConfig:
    """How many retries a dependency may get, relative to its calls.

    Attributes:
        window: Seconds over which calls and retries are counted.
        ratio: Retries allowed per call made in the window (0.2: one retry per five calls).
        min_retries: Retries always allowed in a window, however few calls it had.
    """

    window: float = 10.0
    ratio: float = 0.2
    min_retries: int = 10

    def __post_init__(self) -> None:
        if not _number(self.window) or self.window <= 0:
            raise UsageError(
                f"RetryBudgetConfig.window must be a positive number of seconds, not "
                f"{self.window!r}",
                field="window",
            )
        if not _number(self.ratio) or self.ratio < 0:
            raise UsageError(
                f"RetryBudgetConfig.ratio must be a number of retries per call >= 0, not "
                f"{self.ratio!r}",
                field="ratio",
            )
        if (
            not isinstance(self.min_retries, int)
            or isinstance(self.min_retries, bool)
            or self.min_retries < 0
        ):
            raise UsageError(
                f"RetryBudgetConfig.min_retries must be an int >= 0, not {self.min_retries!r}",
                field="min_retries",
            )


def _number(value: object) -> bool:
    """A finite int or float (not a bool)."""
    return isinstance(value, int | float) and not isinstance(value, bool) and math.isfinite(value)


class RetryBudget:
    """The retries one dependency may still get, shared by every run of a worker process.

    Call `record_call()` for every call made to the dependency (first attempts and retries
    alike) and `try_spend()` before deciding to retry one: it says whether the budget allows
    the retry, and counts it if so. Used from one event loop (not thread-safe).
    """

    def __init__(self, config: RetryBudgetConfig | None = None, *, clock: Clock) -> None:
        self.config = config or RetryBudgetConfig()
        self._clock = clock
        self._window = SlidingWindow(self.config.window)

    def record_call(self) -> None:
        """Count a call made to the dependency now."""
        self._window.add(self._clock.now(), first=1)

    def try_spend(self) -> bool:
        """Take one retry from the budget: True if allowed (and counted), False if spent."""
        now = self._clock.now()
        if self._window.totals(now)[1] >= self.allowance(now):
            return False
        self._window.add(now, second=1)
        return True

    def allowance(self, now: float | None = None) -> float:
        """Retries the window allows in all: max(min_retries, ratio x calls in the window)."""
        calls, _ = self._window.totals(self._clock.now() if now is None else now)
        return max(float(self.config.min_retries), self.config.ratio * calls)

    @property
    def calls(self) -> int:
        """Calls counted in the current window."""
        return self._window.totals(self._clock.now())[0]

    @property
    def retries(self) -> int:
        """Retries spent in the current window."""
        return self._window.totals(self._clock.now())[1]


__all__ = ["BUCKETS_PER_WINDOW", "RetryBudget", "RetryBudgetConfig", "SlidingWindow"]
