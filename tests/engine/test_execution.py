"""Executing one claimed run: how it ends, and what a failing store must not do to it."""

from __future__ import annotations

import contextlib
from typing import Any, cast

import pytest

from corral import Corral, RunContext
from corral.engine import Execution, execute_run
from corral.errors import StoreUnavailable
from corral.store import RunRecord, StepWrite, Store
from corral.testing import FakeClock

from .harness import Calls


class FlakyStore:
    """The real store, except that the first matching journal write fails as if it were locked.

    Fault injection around the real store, as Temporal's ambiguous-commit tests do: the store
    still does the work; only the answer is an error.
    """

    def __init__(self, inner: Store, *, kind: str, status: str) -> None:
        self._inner = inner
        self._kind = kind
        self._status = status
        self.failures = 0

    def __getattr__(self, name: str) -> Any:
        return getattr(self._inner, name)

    async def write_step(self, write: StepWrite) -> None:
        if (write.kind, write.status) == (self._kind, self._status) and self.failures == 0:
            self.failures += 1
            raise StoreUnavailable("database is locked (injected)", path="flaky")
        await self._inner.write_step(write)


async def _claim(store: Store, clock: FakeClock) -> RunRecord:
    [run] = await store.claim_runs(worker_id="w", limit=1, now=clock.now(), lease_ttl=30)
    return run


async def test_outcomes_of_execute_run(corral: Corral, store: Store, clock: FakeClock) -> None:
    @corral.workflow
    async def ok(ctx: RunContext, _: None) -> int:
        return 1

    @corral.workflow
    async def broken(ctx: RunContext, _: None) -> int:
        raise ValueError("no")

    @corral.workflow
    async def sleepy(ctx: RunContext, _: None) -> int:
        await ctx.sleep(50)
        return 1

    outcomes: list[Execution] = []
    for wf in (ok, broken, sleepy):
        handle = await corral.start(wf)
        run = await _claim(store, clock)
        assert run.run_id == handle.run_id
        outcomes.append(
            await execute_run(run, store=store, clock=clock, workflows=corral.workflows)
        )
    assert [(e.outcome, e.wake_at) for e in outcomes] == [
        ("succeeded", None),
        ("failed", None),
        ("waiting", clock.now() + 50),
    ]


async def test_execute_run_with_a_stale_lease_reports_lease_lost(
    corral: Corral, store: Store, clock: FakeClock
) -> None:
    @corral.workflow
    async def ok(ctx: RunContext, _: None) -> int:
        return 1

    await corral.start(ok)
    first = await _claim(store, clock)
    clock.advance(31)
    await _claim(store, clock)  # a second worker took over
    execution = await execute_run(first, store=store, clock=clock, workflows=corral.workflows)
    assert execution.outcome == "lease_lost"
    run = await store.get_run(first.run_id)
    assert run is not None
    assert run.status == "running"


@pytest.mark.parametrize(
    ("failing", "at_most_once"),
    [("succeeded", False), ("started", True)],
    ids=["result_write", "intent_write"],
)
async def test_a_transient_store_error_does_not_fail_the_run(
    corral: Corral, store: Store, clock: FakeClock, failing: str, at_most_once: bool
) -> None:
    """A locked database is a reason to stop executing, not a verdict on the run.

    The worker's own comment says so ("The store failed under the run. Its lease will expire and
    it will be resumed"); the run must come back and succeed, not end `failed` for good.
    """
    calls = Calls()

    async def act() -> str:
        calls.hit("act")
        return "acted"

    @corral.workflow
    async def flow(ctx: RunContext, _: None) -> str:
        return await ctx.step(act, name="act", at_most_once=at_most_once)

    handle = await corral.start(flow)
    run = await _claim(store, clock)
    flaky = FlakyStore(store, kind="step", status=failing)
    # Giving up on the execution is fine; recording a failure is not.
    with contextlib.suppress(StoreUnavailable):
        await execute_run(run, store=cast(Store, flaky), clock=clock, workflows=corral.workflows)
    assert flaky.failures == 1
    after = await handle.get()
    assert after.status != "failed", f"run failed for good: {after.error}"

    clock.advance(31)
    await corral.run_until_idle()
    assert await handle.wait_for_result(timeout=5) == "acted"
    assert 1 <= calls["act"] <= 2  # at least once; a second call carries the same key
