"""Executing one claimed run: replay its journal, continue its code, record how it stopped."""

from __future__ import annotations

import json
import logging
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any, Literal

from corral.engine import payloads
from corral.engine.clock import Clock
from corral.engine.context import CANCEL_SIGNAL, ReconciliationNeeded, RunContext, Suspend
from corral.engine.crashpoints import crash_point
from corral.engine.workflows import WorkflowRegistry
from corral.errors import (
    CorralError,
    LeaseLost,
    NeedsReconciliation,
    NonDeterminismError,
    RunCancelled,
    StoreUnavailable,
    UnknownWorkflow,
)
from corral.store import RunRecord, Store

log = logging.getLogger("corral.engine")

Outcome = Literal[
    "succeeded",
    "failed",
    "cancelled",
    "waiting",
    "needs_reconciliation",
    "lease_lost",
    "released",
]


@dataclass(frozen=True, slots=True)
class Execution:
    """How one execution of a run ended."""

    run_id: str
    outcome: Outcome
    wake_at: float | None = None


async def execute_run(
    run: RunRecord,
    *,
    store: Store,
    clock: Clock,
    workflows: WorkflowRegistry,
    on_new_run: Callable[[], None] = lambda: None,
    on_context: Callable[[RunContext], None] = lambda ctx: None,
    retry_unknown_after: float = 30.0,
) -> Execution:
    """Execute a run this worker has just claimed (its lease epoch is `run.lease_epoch`)."""
    epoch = run.lease_epoch
    try:
        workflow = workflows.resolve(run.workflow)
    except UnknownWorkflow as exc:
        # Another worker may know it; give the run back rather than failing it.
        log.warning("run %s: %s; releasing it", run.run_id, exc)
        await store.release_run(
            run.run_id, epoch, wake_at=clock.now() + retry_unknown_after, now=clock.now()
        )
        return Execution(run.run_id, "released")
    if workflow.version != run.workflow_version:
        log.warning(
            "run %s needs %s version %s; this worker has version %s; releasing it",
            run.run_id,
            workflow.name,
            run.workflow_version,
            workflow.version,
        )
        await store.release_run(
            run.run_id, epoch, wake_at=clock.now() + retry_unknown_after, now=clock.now()
        )
        return Execution(run.run_id, "released")

    journal = await store.load_journal(run.run_id)
    ctx = RunContext(
        run=run,
        journal=journal,
        store=store,
        clock=clock,
        workflows=workflows,
        on_new_run=on_new_run,
        deadline=workflow.deadline(run.created_at),
        cancel_requested=await _cancel_waiting(store, run, journal),
    )
    on_context(ctx)
    token = ctx.enter()
    try:
        try:
            value = await workflow.call(ctx, run.input)
            ctx.check_replayed_all()
            await ctx.drain()
            result = workflow.encode_output(value)
        except Suspend:
            await ctx.settle()
            wake_at = ctx.wake_at()
            await store.suspend_run(
                run.run_id, epoch, wake_at=wake_at, seen_wake_seq=run.wake_seq, now=clock.now()
            )
            return Execution(run.run_id, "waiting", wake_at)
        except ReconciliationNeeded as pending:
            await ctx.settle()
            error = NeedsReconciliation(
                f"run {run.run_id}: at-most-once step {pending.seq} ({pending.name}) was in "
                "flight when its worker stopped; whether it took effect is unknown. Check the "
                "external system, then resolve the run",
                run_id=run.run_id,
                seq=pending.seq,
                step=pending.name,
            )
            await store.finish_run(
                run.run_id,
                epoch,
                status="needs_reconciliation",
                result=None,
                error=payloads.dump_error(error),
                now=clock.now(),
            )
            return Execution(run.run_id, "needs_reconciliation")
        except (LeaseLost, StoreUnavailable):
            # Not the run's fault: leave it to be resumed (released now, or when its lease ends).
            raise
        except Exception as caught:
            failure = ctx.nondeterminism or caught
            await _settle_quietly(ctx)
            stored = payloads.error_payload(failure)
            if ctx.compensable and not isinstance(failure, NonDeterminismError):
                try:
                    failed = await ctx.compensate()
                except Suspend:  # a compensation waits to be retried: fail after it
                    await ctx.settle()
                    wake_at = ctx.wake_at()
                    await store.suspend_run(
                        run.run_id,
                        epoch,
                        wake_at=wake_at,
                        seen_wake_seq=run.wake_seq,
                        now=clock.now(),
                    )
                    return Execution(run.run_id, "waiting", wake_at)
                await ctx.drain()
                stored["compensations_failed"] = failed
            if isinstance(failure, RunCancelled):
                crash_point("run.before_finish")
                await store.cancel_run(run.run_id, now=clock.now())
                return Execution(run.run_id, "cancelled")
            crash_point("run.before_finish")
            await store.finish_run(
                run.run_id,
                epoch,
                status="failed",
                result=None,
                error=json.dumps(stored, default=str),
                now=clock.now(),
            )
            if not isinstance(failure, CorralError):
                log.info("run %s failed: %s: %s", run.run_id, type(failure).__name__, failure)
            return Execution(run.run_id, "failed")
        crash_point("run.before_finish")
        await store.finish_run(
            run.run_id, epoch, status="succeeded", result=result, error=None, now=clock.now()
        )
        return Execution(run.run_id, "succeeded")
    except LeaseLost:
        log.info("run %s: lease lost; another worker or a cancel has it now", run.run_id)
        return Execution(run.run_id, "lease_lost")
    finally:
        RunContext.leave(token)


async def _cancel_waiting(store: Store, run: RunRecord, journal: list[Any]) -> bool:
    """Whether a cancel waits for this run: only runs with compensations are cancelled by a
    signal (the others at once), so only they pay for the look."""
    if not any(record.detail and '"compensate"' in record.detail for record in journal):
        return False
    signals = await store.list_signals(run.run_id)
    return any(s.name == CANCEL_SIGNAL and s.consumed_seq is None for s in signals)


async def _settle_quietly(ctx: RunContext) -> None:
    """Let sibling branches finish before recording a failure; their own errors are moot."""
    try:
        await ctx.settle()
    except (LeaseLost, StoreUnavailable):
        raise
    except (Exception, Suspend, ReconciliationNeeded):
        pass


def error_summary(error: str | None) -> str:
    """One line for a stored error: `Type: message`."""
    if not error:
        return ""
    data = json.loads(error)
    return f"{data.get('type')}: {data.get('message')}"


__all__ = ["Execution", "Outcome", "error_summary", "execute_run"]
