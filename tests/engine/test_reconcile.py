"""Reconciling a run stopped in needs_reconciliation: a person says what the in-flight step did."""

from __future__ import annotations

import pytest

from corral import (
    Corral,
    RunContext,
    RunNotFound,
    RunNotReconcilable,
    StepFailed,
    UsageError,
)
from corral.engine import RunHandle, execute_run
from corral.store import Store
from corral.testing import FakeClock

from .harness import Calls, Crash


async def stranded_refund(
    corral: Corral, store: Store, clock: FakeClock, calls: Calls
) -> RunHandle[str]:
    """A run whose at-most-once refund was in flight when its worker died."""

    async def refund(amount: int) -> str:
        calls.hit("refund")
        if calls["refund"] == 1:
            raise Crash  # the worker dies after dispatch: did the refund happen?
        return f"refunded {amount}"

    @corral.workflow
    async def pay_back(ctx: RunContext, amount: int) -> str:
        try:
            done = await ctx.step(refund, amount, name="refund", at_most_once=True)
        except StepFailed as failed:
            return f"gave up: {failed.ids['error_message']}"
        return f"{done}, then notified"

    handle = await corral.start(pay_back, 30)
    [run] = await store.claim_runs(worker_id="doomed", limit=1, now=clock.now(), lease_ttl=30)
    with pytest.raises(Crash):
        await execute_run(run, store=store, clock=clock, workflows=corral.workflows)
    clock.advance(31)
    await corral.run_until_idle()
    assert await handle.status() == "needs_reconciliation"
    return handle


async def test_retry_runs_the_step_again_with_the_same_key(
    corral: Corral, store: Store, clock: FakeClock
) -> None:
    calls = Calls()
    handle = await stranded_refund(corral, store, clock, calls)
    settled = await corral.reconcile(handle.run_id, retry=True)
    assert (settled.seq, settled.name) == (1, "refund")
    assert await handle.status() == "pending"
    await corral.run_until_idle()
    assert await handle.wait_for_result(timeout=5) == "refunded 30, then notified"
    assert calls["refund"] == 2


async def test_a_result_continues_the_run_without_calling_the_step(
    corral: Corral, store: Store, clock: FakeClock
) -> None:
    calls = Calls()
    handle = await stranded_refund(corral, store, clock, calls)
    await corral.reconcile(handle.run_id, result="refunded by hand")
    await corral.run_until_idle()
    assert await handle.wait_for_result(timeout=5) == "refunded by hand, then notified"
    assert calls["refund"] == 1
    [step] = await corral.journal(handle.run_id)
    assert (step.status, step.result) == ("succeeded", '"refunded by hand"')


async def test_failed_makes_the_workflow_see_step_failed(
    corral: Corral, store: Store, clock: FakeClock
) -> None:
    calls = Calls()
    handle = await stranded_refund(corral, store, clock, calls)
    await corral.reconcile(handle.run_id, failed="the bank rejected it")
    await corral.run_until_idle()
    assert await handle.wait_for_result(timeout=5) == "gave up: the bank rejected it"
    assert calls["refund"] == 1


async def test_only_a_run_needing_reconciliation_is_reconciled(
    corral: Corral, store: Store, clock: FakeClock
) -> None:
    @corral.workflow
    async def fine(ctx: RunContext) -> int:
        return 1

    handle = await corral.start(fine)
    with pytest.raises(RunNotReconcilable, match="has status pending"):
        await corral.reconcile(handle.run_id, retry=True)
    with pytest.raises(RunNotFound):
        await corral.reconcile("no-such-run", retry=True)
    with pytest.raises(UsageError, match="not both"):
        await corral.reconcile(handle.run_id, retry=True, failed="x")
    await corral.run_until_idle()
    with pytest.raises(RunNotReconcilable, match="has status succeeded"):
        await corral.reconcile(handle.run_id, retry=True)

    calls = Calls()
    stranded = await stranded_refund(corral, store, clock, calls)
    await corral.reconcile(stranded.run_id, retry=True)
    with pytest.raises(RunNotReconcilable):  # settled once; a second answer is refused
        await corral.reconcile(stranded.run_id, result="twice")
    await corral.run_until_idle()
    assert await stranded.wait_for_result(timeout=5) == "refunded 30, then notified"
