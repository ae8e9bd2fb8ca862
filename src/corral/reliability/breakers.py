"""Circuit breakers: stop calling a dependency that is failing, and find out when it is back.

A `CircuitBreaker` guards one dependency (a model provider, an MCP server, an API a tool calls)
for every run of a worker process:

```
           failures / calls >= failure_rate            open_for has passed
  closed  ------------------------------------>  open  ------------------->  half_open
    ^      (over the last `window` seconds, once         ^                       |
    |       at least `min_calls` calls ended)            |   a probe call fails  |
    |                                                    +-----------------------+
    |              `half_open_probes` probe calls succeed                        |
    +----------------------------------------------------------------------------+
```

While open, `before_call()` raises `CircuitOpen` at once, saying when the breaker will try
again (`retry_after`): runs fail fast and their retry policies wait instead of piling onto a
dependency that is down. Half-open admits a few *probe* calls; their outcomes decide.

Every call is `permit = breaker.before_call()`, then `breaker.record(permit, failed=...)` (or
`release(permit)` if the call never got an answer). A permit remembers the breaker's generation,
which changes on every transition, so a slow call from an earlier state that ends late cannot
count in the new one: a call started while closed and ending while half-open is not a probe
(tests/reliability/test_breakers.py, `test_stale_permits_do_not_count`).

Time comes from the injected clock; the open -> half_open transition happens when the breaker is
next looked at (a call, `state`, `snapshot()`), not on a timer.
"""

from __future__ import annotations

import datetime as dt
import logging
import math
from collections.abc import Callable
from dataclasses import dataclass
from typing import Literal, NoReturn

from corral.engine.clock import Clock
from corral.errors import CircuitOpen, UsageError
from corral.reliability.retry_budgets import SlidingWindow

log = logging.getLogger("corral.reliability")

BreakerState = Literal["closed", "open", "half_open"]


@dataclass(frozen=True, slots=True)
class BreakerConfig:
    """When a breaker opens and how it recovers.

    Attributes:
        failure_rate: Fraction of failed calls (0 < rate <= 1) in the window that opens it.
        window: Seconds of outcomes a closed breaker looks at.
        min_calls: Calls that must have ended in the window before it may open: two failures
            out of three calls is not an outage.
        open_for: Seconds it stays open before admitting probe calls.
        half_open_probes: Probe calls admitted when half-open; that many successes close it.
    """

    failure_rate: float = 0.5
    window: float = 60.0
    min_calls: int = 10
    open_for: float = 30.0
    half_open_probes: int = 3

    def __post_init__(self) -> None:
        if not _number(self.failure_rate) or not 0 < self.failure_rate <= 1:
            _invalid("failure_rate", "a fraction above 0 and at most 1", self.failure_rate)
        if not _number(self.window) or self.window <= 0:
            _invalid("window", "a positive number of seconds", self.window)
        if not _count(self.min_calls) or self.min_calls < 1:
            _invalid("min_calls", "an int >= 1", self.min_calls)
        if not _number(self.open_for) or self.open_for <= 0:
            _invalid("open_for", "a positive number of seconds", self.open_for)
        if not _count(self.half_open_probes) or self.half_open_probes < 1:
            _invalid("half_open_probes", "an int >= 1", self.half_open_probes)


@dataclass(frozen=True, slots=True)
class Permit:
    """Leave to make one call, from `CircuitBreaker.before_call()`; give it back to `record`."""

    generation: int
    probe: bool


@dataclass(frozen=True, slots=True)
class Transition:
    """A breaker changed state (one frozen input object for `on_transition` hooks).

    Attributes:
        dependency: The breaker's key.
        from_state: The state it left.
        to_state: The state it entered.
        at: When (seconds since the epoch, on the breaker's clock).
        calls: Calls counted when it changed: in the window (closed -> open), of the probes
            (from half_open), or the ones that opened it (open -> half_open).
        failures: Failed calls among those.
        reason: Why, for people.
    """

    dependency: str
    from_state: BreakerState
    to_state: BreakerState
    at: float
    calls: int
    failures: int
    reason: str


@dataclass(frozen=True, slots=True)
class BreakerSnapshot:
    """A breaker as it is now.

    Attributes:
        key: The dependency it guards.
        state: closed, open or half_open.
        since: When it entered `state`.
        calls: Calls in the window (closed), of the probes (half_open), or that opened it (open).
        failures: Failed calls among those.
        failure_rate: failures / calls (0.0 without calls).
        opened_count: How many times it has opened since the process started.
    """

    key: str
    state: BreakerState
    since: float
    calls: int
    failures: int
    failure_rate: float
    opened_count: int


class CircuitBreaker:
    """One dependency's breaker: closed, open or half-open (see the module's docstring).

    Used from one event loop (not thread-safe). Every permit from `before_call()` must be given
    back once, to `record()` or `release()`; `Dependency.call` does this.

    Args:
        key: The dependency's name, e.g. `openai:gpt-4o` or `mcp:github`.
        config: When to open and how to recover (default `BreakerConfig()`).
        clock: The clock outcomes are timed on.
        on_transition: Called (synchronously) after each change of state.
    """

    def __init__(
        self,
        key: str,
        config: BreakerConfig | None = None,
        *,
        clock: Clock,
        on_transition: Callable[[Transition], None] | None = None,
    ) -> None:
        self.key = key
        self.config = config or BreakerConfig()
        self._clock = clock
        self._on_transition = on_transition
        self._state: BreakerState = "closed"
        self._since = clock.now()
        self._generation = 0
        self._window = SlidingWindow(self.config.window)
        self._opened_count = 0
        self._tripped = (0, 0)  # (calls, failures) that last opened it
        # What opened it (while open), or the probes' tally (while half-open).
        self._calls = 0
        self._failures = 0
        self._probes_admitted = 0

    @property
    def state(self) -> BreakerState:
        """The current state (an open breaker whose `open_for` has passed is half-open)."""
        self._advance(self._clock.now())
        return self._state

    def before_call(self) -> Permit:
        """Ask to make a call now.

        Returns:
            A permit to hand to `record()` (or `release()`) when the call ends.

        Raises:
            CircuitOpen: The breaker is open, or half-open with every probe taken. Its ids:
                `dependency`, `state`, `since`, `retry_after` (seconds until it admits calls
                again; 0 while half-open probes are out), `failure_rate`.
        """
        now = self._clock.now()
        self._advance(now)
        if self._state == "closed":
            return Permit(self._generation, probe=False)
        if self._state == "half_open" and self._probes_admitted < self.config.half_open_probes:
            self._probes_admitted += 1
            return Permit(self._generation, probe=True)
        raise self._refusal(now)

    def record(self, permit: Permit, *, failed: bool) -> None:
        """The call made under `permit` ended: `failed` says whether the dependency failed it.

        An error that is the caller's fault (bad arguments, a 400) is not a failure of the
        dependency: it answered.
        """
        now = self._clock.now()
        self._advance(now)
        if permit.generation != self._generation:
            return  # from an earlier state: it says nothing about this one
        if self._state == "closed":
            self._window.add(now, first=1, second=int(failed))
            if failed:
                self._maybe_open(now)
            return
        if self._state == "half_open" and permit.probe:
            self._calls += 1
            if failed:
                self._failures += 1
                self._move("open", now, self._calls, self._failures, "a probe call failed")
            elif self._calls - self._failures >= self.config.half_open_probes:
                self._move(
                    "closed",
                    now,
                    self._calls,
                    self._failures,
                    f"{self._calls} probe call{_s(self._calls)} succeeded",
                )

    def release(self, permit: Permit) -> None:
        """The call made under `permit` ended without an answer (it was cancelled): forget it,
        and let another probe take its place."""
        self._advance(self._clock.now())
        if permit.generation == self._generation and permit.probe and self._state == "half_open":
            self._probes_admitted -= 1

    def snapshot(self) -> BreakerSnapshot:
        """The breaker as it is now."""
        now = self._clock.now()
        self._advance(now)
        if self._state == "closed":
            calls, failures = self._window.totals(now)
        else:
            calls, failures = self._calls, self._failures
        return BreakerSnapshot(
            key=self.key,
            state=self._state,
            since=self._since,
            calls=calls,
            failures=failures,
            failure_rate=failures / calls if calls else 0.0,
            opened_count=self._opened_count,
        )

    # -- transitions ---------------------------------------------------------------------------

    def _advance(self, now: float) -> None:
        """Apply the one transition time alone makes: open -> half_open after `open_for`."""
        if self._state == "open" and now >= self._since + self.config.open_for:
            probes = self.config.half_open_probes
            self._move(
                "half_open",
                now,
                *self._tripped,
                f"open for {self.config.open_for:g}s: admitting {probes} probe call{_s(probes)}",
            )

    def _maybe_open(self, now: float) -> None:
        calls, failures = self._window.totals(now)
        if calls < self.config.min_calls or failures < self.config.failure_rate * calls:
            return
        reason = (
            f"{failures} of {calls} calls failed within {self.config.window:g}s "
            f"({failures / calls:.0%} >= {self.config.failure_rate:.0%})"
        )
        self._move("open", now, calls, failures, reason)

    def _move(
        self, to_state: BreakerState, now: float, calls: int, failures: int, reason: str
    ) -> None:
        """Enter `to_state`: every field is updated before the hook sees the breaker."""
        from_state = self._state
        self._state = to_state
        self._since = now
        self._generation += 1
        self._window.clear()  # outcomes of another state say nothing about the next closed one
        self._probes_admitted = 0
        if to_state == "open":
            self._opened_count += 1
            self._tripped = (calls, failures)
            self._calls, self._failures = calls, failures
        else:
            self._calls = self._failures = 0
        if self._on_transition is None:
            return
        transition = Transition(
            dependency=self.key,
            from_state=from_state,
            to_state=to_state,
            at=now,
            calls=calls,
            failures=failures,
            reason=reason,
        )
        try:
            self._on_transition(transition)
        except Exception:
            # A hook (persisting, metrics) must not turn a call's outcome into an error.
            log.exception("on_transition hook of breaker %s failed", self.key)

    def _refusal(self, now: float) -> CircuitOpen:
        calls, failures = self._tripped
        since = _utc(self._since)
        if self._state == "open":
            retry_after = max(0.0, self._since + self.config.open_for - now)
            message = (
                f"the circuit breaker of {self.key} is open since {since} ({failures} of "
                f"{calls} calls failed): calls fail fast until it tries again in "
                f"{retry_after:.3g}s"
            )
        else:
            retry_after = 0.0
            message = (
                f"the circuit breaker of {self.key} is half-open since {since}, testing the "
                "dependency with probe calls: other calls fail fast until they succeed"
            )
        return CircuitOpen(
            message,
            dependency=self.key,
            state=self._state,
            since=self._since,
            retry_after=retry_after,
            failure_rate=failures / calls if calls else 0.0,
        )


def _utc(timestamp: float) -> str:
    moment = dt.datetime.fromtimestamp(timestamp, tz=dt.UTC)
    return moment.strftime("%Y-%m-%d %H:%M:%SZ")


def _s(count: int) -> str:
    return "" if count == 1 else "s"


def _number(value: object) -> bool:
    """A finite int or float (not a bool)."""
    return isinstance(value, int | float) and not isinstance(value, bool) and math.isfinite(value)


def _count(value: object) -> bool:
    return isinstance(value, int) and not isinstance(value, bool)


def _invalid(name: str, expected: str, value: object) -> NoReturn:
    raise UsageError(f"BreakerConfig.{name} must be {expected}, not {value!r}", field=name)


__all__ = [
    "BreakerConfig",
    "BreakerSnapshot",
    "BreakerState",
    "CircuitBreaker",
    "Permit",
    "Transition",
]
