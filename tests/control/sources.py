"""Events made the way Corral makes them: an approval request, a budget refusal, a breaker
that opens, a run that fails (through the governance, reliability and engine functions)."""

from __future__ import annotations

import datetime as dt
from typing import Any

from corral import Corral, RunContext, workflow
from corral.governance.approvals import ApprovalRequest, request_approval
from corral.governance.budgets import ReserveOutcome, reserve
from corral.governance.documents import ApprovalSpec
from corral.reliability.breaker_store import append_transition
from corral.reliability.breakers import Transition
from corral.store import Store
from corral.testing import FakeClock


@workflow
async def explode(ctx: RunContext, order: str) -> str:
    raise ValueError(f"order {order} cannot be refunded")


async def make_approval(
    store: Store,
    *,
    at: float,
    tenant: str = "default",
    run_id: str = "run-1",
    step_seq: int = 1,
    deadline: float | None = None,
    arguments: dict[str, Any] | None = None,
) -> ApprovalRequest:
    """A pending approval request, as a governed tool call makes one."""
    spec = ApprovalSpec(approvers=("finance",), deadline=deadline)
    return await store.run_script(
        lambda d: request_approval(
            tenant=tenant,
            run_id=run_id,
            step_seq=step_seq,
            agent="refunds",
            tool="refund",
            arguments=arguments or {"order": "A-1", "amount": 120},
            parameters={"type": "object"},
            reason="refunds over 100 need finance",
            policy="payments",
            policy_version=1,
            rule="big-refunds",
            spec=spec,
            now=at,
            dialect=d,
        )
    )


async def refuse_budget(
    store: Store, *, at: float, tenant: str = "default", run_id: str = "run-1"
) -> ReserveOutcome:
    """A reservation the tenant's daily USD budget refuses (audited as `budget.exceeded`)."""
    day = dt.datetime.fromtimestamp(at, tz=dt.UTC).strftime("%Y-%m-%d")
    return await store.run_script(
        lambda d: reserve(
            tenant=tenant,
            reservation_id=f"{run_id}:3",
            amounts=[("tenant", day, "usd", 5.0)],
            limits=[("tenant", day, "usd", 1.0, None, "daily spend")],
            now=at,
            dialect=d,
        )
    )


async def open_breaker(store: Store, *, at: float, dependency: str = "openai") -> None:
    """A worker's breaker for `dependency` opened at `at`."""
    transition = Transition(
        dependency=dependency,
        from_state="closed",
        to_state="open",
        at=at,
        calls=10,
        failures=6,
        reason="6 of 10 calls failed",
    )
    await store.run_script(lambda d: append_transition("worker-1", transition))


async def fail_run(store: Store, clock: FakeClock, *, tenant: str = "default") -> str:
    """A run of `explode` that failed; its id."""
    corral = Corral(store=store, clock=clock, workflows=[explode], tenant=tenant)
    handle = await corral.start("explode", "A-1")
    await corral.run_until_idle()
    run = await corral.get_run(handle.run_id)
    assert run.status == "failed", run.status
    return handle.run_id
