"""Agents under governance: the checks inside each tool step and model step, and approvals.

The tool loop (`loop.py`) calls these from the bodies of its steps, so every check happens where
the call happens, on the worker making it, after any restart:

- a tool step validates the arguments, then asks the governor (scopes, policies); a deny fails
  the step (the model is told why); a `require_approval` makes the step *return* that decision
  (nothing ran), and the loop requests an approval and waits for it durably; then the kill switch
  and the budgets are checked last, right before the call;
- an approved call is a new tool step carrying the approval: its arguments (edited or not) must
  hash to what the human approved, so an approval is bound to the exact call;
- a model step reserves its estimated tokens and cost before the call and settles the actual
  usage after; a budget that would be exceeded stops the run or degrades to a cheaper model, as
  its policy says.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from pydantic import BaseModel

from corral.engine import RunContext, StepInfo
from corral.errors import ApprovalRequired, PolicyDenied, UsageError
from corral.governance.approvals import ApprovalDecision, arguments_hash
from corral.governance.budgets import BudgetExceeded
from corral.governance.decisions import Decision
from corral.governance.documents import BudgetMetric
from corral.governance.governor import Governor, Reserved, Subject
from corral.governance.identity import ScopeChain
from corral.models import Model, ModelRequest, Usage, resolve_model
from corral.models.prices import cost_usd
from corral.tools import ToolDefinition

OUTPUT_ALLOWANCE = 1024
"""Output tokens reserved for a model call before it is made (settled to the actual count)."""


class ToolOutcome(BaseModel):
    """A tool step's journaled result: what the call returned and the decision that let it run;
    or, with `status="approval_required"`, the decision that stopped it before it started."""

    status: str = "done"
    value: Any = None
    decision: Decision | None = None
    arguments: dict[str, Any] | None = None


@dataclass(frozen=True)
class Governed:
    """A governor and who is calling: what a step body needs to check its call."""

    governor: Governor
    subject: Subject

    @classmethod
    def of(cls, ctx: RunContext, agent: str, chain: ScopeChain) -> Governed:
        return cls(
            Governor(ctx.store, ctx.clock),
            Subject(
                tenant=ctx.tenant,
                workflow=ctx.workflow,
                run_id=ctx.run_id,
                agent=agent,
                chain=chain,
            ),
        )

    async def check_tool(
        self,
        definition: ToolDefinition,
        arguments: dict[str, Any],
        step: StepInfo,
        approval: ApprovalDecision | None,
    ) -> Decision:
        """Scopes and policies for a tool call; raises `PolicyDenied`; returns a
        `require_approval` decision only when no matching approval was given."""
        decision = await self.governor.decide(
            self.subject,
            tool=definition.name,
            tool_scopes=definition.scopes,
            tool_risk=definition.risk,
            arguments=arguments,
            step_key=step.idempotency_key,
        )
        if decision.effect == "deny":
            raise PolicyDenied(
                f"the call to {definition.name!r} was denied"
                + (f" by policy {decision.policy} v{decision.version}" if decision.policy else "")
                + (f", rule {decision.rule}" if decision.rule else "")
                + f": {decision.reason}",
                tool=definition.name,
                policy=decision.policy,
                version=decision.version,
                rule=decision.rule,
                reason=decision.reason,
            )
        if approval is not None:
            if approval.status != "approved":
                raise UsageError(f"approval {approval.approval_id} was not approved")
            if arguments_hash(arguments) != approval.arguments_hash:
                raise ApprovalRequired(
                    f"the arguments of {definition.name!r} differ from those approved in "
                    f"{approval.approval_id}: an approval covers one exact call",
                    approval_id=approval.approval_id,
                )
        return decision

    async def start_tool(
        self, definition: ToolDefinition, step: StepInfo, approval: ApprovalDecision | None
    ) -> Reserved | Decision:
        """The last checks before a tool starts: the kill switch, then the tool-call budget.

        Returns the reservation to settle; or, when the budget is exhausted and its policy says
        to ask a human, the `require_approval` decision (a call a human approved goes ahead).
        """
        await self.governor.check_not_paused(self.subject)
        reserved = await self.governor.reserve(
            self.subject,
            reservation_id=step.idempotency_key,
            amounts={"tool_calls": 1.0},
            tool=definition.name,
        )
        if reserved.granted:
            return reserved
        limit = reserved.limit
        if limit is not None and limit.on_exceed == "require_approval" and limit.approval:
            if approval is not None:
                return Reserved(reserved.reservation_id, granted=True, active=False)
            return Decision(
                effect="require_approval",
                policy=reserved.policy,
                rule=f"budget:{limit.name}",
                reason=f"budget {limit.name!r} is spent ({reserved.used:g} of {limit.limit:g} "
                f"{limit.metric} per {limit.scope}): a human must approve going over",
                approval=limit.approval,
            )
        raise self._exceeded(reserved)

    async def finish_tool(self, reserved: Reserved, used: float = 1.0) -> None:
        await self.governor.settle(self.subject, reserved, {"tool_calls": used})

    async def start_model(
        self, model: Model, request: ModelRequest, step: StepInfo
    ) -> tuple[Model, Reserved]:
        """Reserve a model call's estimate; on a refused budget, stop or degrade as it says."""
        estimate = Usage(input_tokens=_estimate_tokens(request), output_tokens=OUTPUT_ALLOWANCE)
        reserved = await self.governor.reserve(
            self.subject,
            reservation_id=step.idempotency_key,
            amounts=_amounts(model.name, estimate),
            tool=f"model:{self.subject.agent}",
        )
        if reserved.granted:
            return model, reserved
        limit = reserved.limit
        if limit is not None and limit.on_exceed == "degrade" and limit.degrade_to:
            cheaper = resolve_model(limit.degrade_to)
            # The cheaper calls are counted, not checked again against the budget they exceeded.
            return cheaper, Reserved(reserved.reservation_id, granted=True, active=False)
        raise self._exceeded(reserved)

    async def finish_model(self, model: Model, reserved: Reserved, usage: Usage) -> None:
        await self.governor.settle(self.subject, reserved, _amounts(model.name, usage))

    def _exceeded(self, reserved: Reserved) -> BudgetExceeded:
        limit = reserved.limit
        name = limit.name if limit else "?"
        how = (
            " (on_exceed: require_approval is for tool calls; this call stops)"
            if limit is not None and limit.on_exceed == "require_approval"
            else ""
        )
        return BudgetExceeded(
            f"budget {name!r} of policy {reserved.policy} would be exceeded: "
            f"{limit.metric if limit else ''} limit {limit.limit if limit else '?'} per "
            f"{limit.scope if limit else '?'}, {reserved.used:g} used{how}",
            budget=name,
            scope=limit.scope if limit else None,
            metric=limit.metric if limit else None,
            limit=limit.limit if limit else None,
            used=reserved.used,
            run_id=self.subject.run_id,
        )


def _amounts(model: str, usage: Usage) -> dict[BudgetMetric, float]:
    amounts: dict[BudgetMetric, float] = {"tokens": float(usage.total_tokens)}
    cost = cost_usd(model, usage)
    if cost is not None:
        amounts["usd"] = cost
    return amounts


def _estimate_tokens(request: ModelRequest) -> int:
    text = request.instructions + "".join(m.content for m in request.messages)
    return (len(text) + 3) // 4
