"""Dependencies: calls counted by their breaker, one registry per store, breakers published to
the store (SQLite and PostgreSQL) in order, in the background, and `flush`."""

from __future__ import annotations

import asyncio
import logging
import os
import re
from typing import Any, cast

import pytest

from corral.errors import CircuitOpen, ModelCallFailed, StepTimeout, ToolArgumentsInvalid
from corral.reliability import (
    BreakerConfig,
    BreakerState,
    Dependencies,
    Dependency,
    dependencies_for,
)
from corral.reliability.breaker_store import BreakerRow, list_breakers, list_transitions
from corral.store import Store
from corral.store.scripts import ScriptFactory
from corral.testing import FakeClock


def state(dependency: Dependency) -> BreakerState:
    """The breaker's state (a call, so that mypy does not narrow it between two looks)."""
    return dependency.breaker.state


QUICK = BreakerConfig(min_calls=2, open_for=10, half_open_probes=1)


async def answer() -> str:
    return "ok"


async def overloaded() -> str:
    raise ModelCallFailed("HTTP 503", status=503, retryable=True)


async def bad_arguments() -> str:
    raise ToolArgumentsInvalid("amount is not a number")


async def outcome(dependency: Dependency, work: Any) -> str:
    """What a call did: its result, or its error's type."""
    try:
        return cast(str, await dependency.call(work))
    except Exception as exc:
        return type(exc).__name__


async def test_transient_errors_fail_the_dependency_and_mistakes_do_not(clock: FakeClock) -> None:
    api = Dependencies(clock=clock).get("api", breaker=QUICK)
    assert await outcome(api, bad_arguments) == "ToolArgumentsInvalid"
    assert await outcome(api, bad_arguments) == "ToolArgumentsInvalid"
    assert api.breaker.snapshot().failures == 0  # it answered: the caller was wrong
    assert await outcome(api, answer) == "ok"
    assert await outcome(api, overloaded) == "ModelCallFailed"
    assert await outcome(api, overloaded) == "ModelCallFailed"
    assert state(api) == "closed"  # 2 of 5 calls failed: 40%
    assert await outcome(api, overloaded) == "ModelCallFailed"
    assert state(api) == "open"  # 3 of 6
    assert api.retry_budget.calls == 6


async def test_an_open_breaker_refuses_without_calling(clock: FakeClock) -> None:
    api = Dependencies(clock=clock).get("api", breaker=QUICK)
    for _ in range(2):
        await outcome(api, overloaded)
    called = False

    async def work() -> str:
        nonlocal called
        called = True
        return "ok"

    with pytest.raises(CircuitOpen) as raised:
        await api.call(work)
    assert not called
    assert raised.value.ids["retry_after"] == 10.0
    assert api.retry_budget.calls == 2  # a refused call is not a call


async def test_a_call_past_its_timeout_is_abandoned_and_counts_as_a_failure(
    clock: FakeClock,
) -> None:
    api = Dependencies(clock=clock).get("api", breaker=BreakerConfig(min_calls=1))

    started = asyncio.Event()

    async def hang() -> str:
        started.set()
        await clock.sleep(3600)
        return "late"

    call = asyncio.ensure_future(api.call(hang, timeout=5))
    await started.wait()
    assert len(clock._sleepers) == 2  # the call and its timeout both wait on the clock
    clock.advance(5)
    with pytest.raises(StepTimeout) as raised:
        await call
    assert raised.value.ids == {"dependency": "api", "timeout": 5}
    assert "api did not answer within 5s" in raised.value.message
    assert state(api) == "open"


async def test_a_cancelled_probe_frees_its_slot(clock: FakeClock) -> None:
    api = Dependencies(clock=clock).get("api", breaker=QUICK)
    for _ in range(2):
        await outcome(api, overloaded)
    clock.advance(10)
    started = asyncio.Event()

    async def hang() -> str:
        started.set()
        await asyncio.Event().wait()
        return "never"

    probe = asyncio.ensure_future(api.call(hang))
    await started.wait()
    with pytest.raises(CircuitOpen):
        await api.call(answer)  # the one probe slot is taken
    probe.cancel()
    with pytest.raises(asyncio.CancelledError):
        await probe
    assert await api.call(answer) == "ok"  # a new probe, which closes it
    assert state(api) == "closed"


async def test_a_circuit_open_from_inside_counts_as_nothing(clock: FakeClock) -> None:
    deps = Dependencies(clock=clock)
    outer, inner = deps.get("agent-api", breaker=QUICK), deps.get("model", breaker=QUICK)
    for _ in range(2):
        await outcome(inner, overloaded)

    async def via_inner() -> str:
        return await inner.call(answer)

    for _ in range(3):
        assert await outcome(outer, via_inner) == "CircuitOpen"
    assert (state(outer), outer.breaker.snapshot().calls) == ("closed", 0)


def test_the_first_configuration_of_a_key_wins(clock: FakeClock) -> None:
    deps = Dependencies(clock=clock)
    first = deps.get("api", breaker=QUICK)
    again = deps.get("api", breaker=BreakerConfig(min_calls=99))
    assert again is first
    assert first.breaker.config == QUICK
    deps.get("b")
    deps.get("a")
    assert [snapshot.key for snapshot in deps.snapshots()] == ["a", "api", "b"]


def test_the_worker_id_names_host_and_process(clock: FakeClock) -> None:
    one, two = Dependencies(clock=clock), Dependencies(clock=clock)
    assert re.fullmatch(rf".+:{os.getpid()}:[0-9a-f]{{6}}", one.worker)
    assert one.worker != two.worker
    assert Dependencies(clock=clock, worker="w1").worker == "w1"


async def test_one_registry_per_store(store: Store, clock: FakeClock) -> None:
    registry = dependencies_for(store, clock)
    assert dependencies_for(store, FakeClock()) is registry
    assert registry.get("api") is dependencies_for(store, clock).get("api")


async def test_transitions_are_persisted_in_order(store: Store, clock: FakeClock) -> None:
    deps = Dependencies(clock=clock, store=store, worker="w1")
    api = deps.get("api", breaker=QUICK)
    start = clock.now()
    for _ in range(2):
        await outcome(api, overloaded)
    await deps.flush()
    [row] = await store.read_script(lambda d: list_breakers())
    assert row == BreakerRow(
        worker="w1",
        dependency="api",
        state="open",
        since=start,
        calls=2,
        failures=2,
        opened_count=1,
        updated_at=start,
    )

    clock.advance(10)
    assert await api.call(answer) == "ok"  # half-open, then the probe closes it
    await deps.flush()
    transitions = await store.read_script(lambda d: list_transitions(dependency="api"))
    assert [(t.from_state, t.to_state, t.at) for t in reversed(transitions)] == [
        ("closed", "open", start),
        ("open", "half_open", start + 10),
        ("half_open", "closed", start + 10),
    ]
    oldest = transitions[-1]
    assert oldest.reason == "2 of 2 calls failed within 60s (100% >= 50%)"
    assert {t.worker for t in transitions} == {"w1"}
    [row] = await store.read_script(lambda d: list_breakers())
    assert (row.state, row.since, row.opened_count) == ("closed", start + 10, 1)
    assert await store.read_script(lambda d: list_transitions(dependency="other")) == []


async def test_publish_writes_counts_at_most_every_few_seconds(
    store: Store, clock: FakeClock
) -> None:
    deps = Dependencies(clock=clock, store=store, worker="w1", publish_every=5)
    api = deps.get("api")
    deps.get("idle")
    await api.call(answer)
    assert await deps.publish()
    rows = await store.read_script(lambda d: list_breakers())
    assert [(r.dependency, r.state, r.calls) for r in rows] == [
        ("api", "closed", 1),
        ("idle", "closed", 0),
    ]
    await api.call(answer)
    assert not await deps.publish()  # written a moment ago
    clock.advance(4.9)
    assert not await deps.publish()
    assert await deps.publish(force=True)
    clock.advance(5)
    await api.call(answer)
    assert await deps.publish()
    rows = await store.read_script(lambda d: list_breakers(updated_within=1, now=clock.now()))
    assert [(r.dependency, r.calls, r.updated_at) for r in rows] == [
        ("api", 3, clock.now()),
        ("idle", 0, clock.now()),
    ]
    assert (
        await store.read_script(lambda d: list_breakers(updated_within=1, now=clock.now() + 2))
        == []
    )


async def test_an_in_memory_registry_publishes_nothing(clock: FakeClock) -> None:
    deps = Dependencies(clock=clock)
    await deps.get("api").call(answer)
    assert not await deps.publish(force=True)
    await deps.flush()


class BrokenStore:
    """A store whose writes fail, as when the database is unreachable."""

    async def run_script(self, factory: ScriptFactory[Any]) -> Any:
        raise OSError("connection refused")


async def test_a_failed_write_is_logged_not_raised(
    clock: FakeClock, caplog: pytest.LogCaptureFixture
) -> None:
    broken = BrokenStore()
    deps = Dependencies(clock=clock, store=cast(Store, broken), worker="w1")
    api = deps.get("api", breaker=QUICK)
    with caplog.at_level(logging.WARNING, logger="corral.reliability"):
        for _ in range(2):
            await outcome(api, overloaded)
        await deps.flush()
    assert state(api) == "open"
    assert "could not publish the breaker state of worker w1" in caplog.text
