"""Circuit breakers on virtual time: closed -> open -> half_open -> closed (or open again)."""

from __future__ import annotations

import logging
from typing import Any

import pytest

from corral.errors import CircuitOpen, UsageError
from corral.reliability import BreakerConfig, BreakerState, CircuitBreaker, Transition
from corral.testing import FakeClock

CONFIG = BreakerConfig(failure_rate=0.5, window=60, min_calls=10, open_for=30, half_open_probes=3)


class Breaker:
    """A breaker under test, with its transitions."""

    def __init__(self, clock: FakeClock, config: BreakerConfig = CONFIG) -> None:
        self.transitions: list[Transition] = []
        self.breaker = CircuitBreaker(
            "payments-api", config, clock=clock, on_transition=self.transitions.append
        )

    def calls(self, *, ok: int = 0, failed: int = 0) -> None:
        for outcome in [False] * ok + [True] * failed:
            self.breaker.record(self.breaker.before_call(), failed=outcome)

    def state(self) -> BreakerState:
        """The breaker's state (a call, so that mypy does not narrow it between two looks)."""
        return self.breaker.state

    @property
    def moves(self) -> list[tuple[str, str]]:
        return [(t.from_state, t.to_state) for t in self.transitions]


def refusal(breaker: CircuitBreaker) -> CircuitOpen:
    with pytest.raises(CircuitOpen) as raised:
        breaker.before_call()
    return raised.value


def test_failures_open_it_only_after_min_calls(clock: FakeClock) -> None:
    b = Breaker(clock)
    b.calls(failed=9)  # every call failed, but nine calls are not evidence of an outage
    assert b.state() == "closed"
    b.calls(failed=1)
    assert b.state() == "open"
    [opened] = b.transitions
    assert (opened.from_state, opened.to_state, opened.calls, opened.failures) == (
        "closed",
        "open",
        10,
        10,
    )
    assert opened.reason == "10 of 10 calls failed within 60s (100% >= 50%)"
    assert opened.at == clock.now()


def test_it_opens_at_the_failure_rate_and_not_below(clock: FakeClock) -> None:
    below = Breaker(clock)
    below.calls(ok=6, failed=4)
    below.calls(ok=10, failed=9)  # 13 of 29: 45%
    assert below.state() == "closed"
    at = Breaker(clock)
    at.calls(ok=5, failed=5)
    assert at.state() == "open"
    assert at.transitions[0].reason == "5 of 10 calls failed within 60s (50% >= 50%)"


def test_old_failures_slide_out_of_the_window(clock: FakeClock) -> None:
    b = Breaker(clock)
    b.calls(failed=9)
    clock.advance(59)
    b.calls(ok=1)
    assert b.breaker.snapshot().calls == 10
    clock.advance(1)  # the nine failures are 60 s old now
    b.calls(failed=1)
    snapshot = b.breaker.snapshot()
    assert (snapshot.state, snapshot.calls, snapshot.failures) == ("closed", 2, 1)


def test_open_fails_fast_saying_when_it_tries_again(clock: FakeClock) -> None:
    b = Breaker(clock)
    opened_at = clock.now()
    b.calls(ok=4, failed=6)
    clock.advance(10)
    error = refusal(b.breaker)
    assert error.ids == {
        "dependency": "payments-api",
        "state": "open",
        "since": opened_at,
        "retry_after": 20.0,
        "failure_rate": 0.6,
    }
    assert error.message == (
        "the circuit breaker of payments-api is open since 2023-11-14 22:13:20Z (6 of 10 calls "
        "failed): calls fail fast until it tries again in 20s"
    )
    snapshot = b.breaker.snapshot()
    assert (snapshot.state, snapshot.calls, snapshot.failures, snapshot.opened_count) == (
        "open",
        10,
        6,
        1,
    )
    assert snapshot.failure_rate == 0.6


def test_half_open_after_open_for_admits_only_the_probes(clock: FakeClock) -> None:
    b = Breaker(clock)
    b.calls(failed=10)
    clock.advance(29.9)
    assert b.state() == "open"
    clock.advance(0.1)
    assert b.state() == "half_open"
    assert b.moves == [("closed", "open"), ("open", "half_open")]
    assert b.transitions[1].reason == "open for 30s: admitting 3 probe calls"
    probes = [b.breaker.before_call() for _ in range(3)]
    assert all(p.probe for p in probes)
    busy = refusal(b.breaker)
    assert (busy.ids["state"], busy.ids["retry_after"]) == ("half_open", 0.0)
    assert "half-open" in busy.message


def test_probes_that_succeed_close_it_with_a_clean_window(clock: FakeClock) -> None:
    b = Breaker(clock)
    b.calls(failed=10)
    clock.advance(30)
    probes = [b.breaker.before_call() for _ in range(3)]
    b.breaker.record(probes[0], failed=False)
    b.breaker.record(probes[1], failed=False)
    assert b.state() == "half_open"
    assert b.breaker.snapshot().calls == 2
    b.breaker.record(probes[2], failed=False)
    assert b.state() == "closed"
    assert b.moves[-1] == ("half_open", "closed")
    assert b.transitions[-1].reason == "3 probe calls succeeded"
    snapshot = b.breaker.snapshot()
    assert (snapshot.calls, snapshot.failures, snapshot.opened_count) == (0, 0, 1)
    b.calls(failed=9)  # the old failures are forgotten: nine new ones do not open it
    assert b.state() == "closed"


def test_a_probe_that_fails_opens_it_again(clock: FakeClock) -> None:
    b = Breaker(clock)
    b.calls(failed=10)
    clock.advance(30)
    first, second = b.breaker.before_call(), b.breaker.before_call()
    b.breaker.record(first, failed=False)
    b.breaker.record(second, failed=True)
    assert b.state() == "open"
    assert b.moves == [("closed", "open"), ("open", "half_open"), ("half_open", "open")]
    assert b.transitions[-1].reason == "a probe call failed"
    assert refusal(b.breaker).ids["retry_after"] == 30.0  # another full open_for
    assert b.breaker.snapshot().opened_count == 2
    clock.advance(30)
    assert b.state() == "half_open"


def test_stale_permits_do_not_count(clock: FakeClock) -> None:
    b = Breaker(clock)
    slow_ok = b.breaker.before_call()  # calls from the closed era, still running...
    slow_failure = b.breaker.before_call()
    b.calls(failed=10)
    clock.advance(30)
    probe = b.breaker.before_call()
    b.breaker.record(slow_ok, failed=False)  # ...end while half-open: not a probe
    assert b.state() == "half_open"
    assert b.breaker.snapshot().calls == 0
    others = [b.breaker.before_call(), b.breaker.before_call()]
    refusal(b.breaker)  # the stale permit did not free a probe slot either
    for permit in [probe, *others]:
        b.breaker.record(permit, failed=False)
    assert b.state() == "closed"
    b.breaker.record(slow_failure, failed=True)  # from two states ago: ignored as well
    assert (b.breaker.snapshot().calls, b.breaker.snapshot().failures) == (0, 0)


def test_a_permit_from_before_a_close_does_not_count_after_it(clock: FakeClock) -> None:
    b = Breaker(clock, BreakerConfig(min_calls=1, open_for=1, half_open_probes=1))
    old = b.breaker.before_call()
    b.calls(failed=1)
    clock.advance(1)
    b.calls(ok=1)  # the probe closes it
    assert b.state() == "closed"
    b.breaker.record(old, failed=True)  # from the first closed era
    assert b.state() == "closed"
    assert b.breaker.snapshot().calls == 0


def test_a_released_probe_lets_another_in(clock: FakeClock) -> None:
    b = Breaker(clock, BreakerConfig(min_calls=1, half_open_probes=1))
    b.calls(failed=1)
    clock.advance(30)
    probe = b.breaker.before_call()
    refusal(b.breaker)
    b.breaker.release(probe)  # cancelled: no answer either way
    assert b.state() == "half_open"
    b.breaker.record(b.breaker.before_call(), failed=False)
    assert b.state() == "closed"


def test_a_failing_hook_does_not_fail_the_call(
    clock: FakeClock, caplog: pytest.LogCaptureFixture
) -> None:
    def explode(transition: Transition) -> None:
        raise RuntimeError("metrics are down")

    breaker = CircuitBreaker("x", BreakerConfig(min_calls=1), clock=clock, on_transition=explode)
    with caplog.at_level(logging.ERROR, logger="corral.reliability"):
        breaker.record(breaker.before_call(), failed=True)
    assert breaker.state == "open"
    assert "on_transition hook of breaker x failed" in caplog.text


@pytest.mark.parametrize(
    ("options", "field"),
    [
        ({"failure_rate": 0}, "failure_rate"),
        ({"failure_rate": 1.5}, "failure_rate"),
        ({"window": -1}, "window"),
        ({"min_calls": 0}, "min_calls"),
        ({"min_calls": 2.0}, "min_calls"),
        ({"open_for": 0}, "open_for"),
        ({"half_open_probes": 0}, "half_open_probes"),
        ({"half_open_probes": True}, "half_open_probes"),
    ],
)
def test_bad_settings_are_refused_naming_the_field(options: dict[str, Any], field: str) -> None:
    with pytest.raises(UsageError, match=rf"BreakerConfig\.{field} must be"):
        BreakerConfig(**options)
