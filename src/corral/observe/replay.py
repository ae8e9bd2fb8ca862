"""Tool-call replay, the dry run: exactly what re-running a recorded tool call would send.

A tool step journals what it was called with (`detail.input`: the call id, the tool, the
arguments as the model wrote them and, for an approved call, the arguments the human approved
and the approval's id) and what came of it (the value, or the error, and the policy decision).
`plan_replay` reads those back into a `ReplayPlan`: the tool, the arguments that would be sent
(the approved ones when a human approved the call, else the model's), the agent that made the
call, and the original outcome to compare with.

Nothing here sends anything. `corral replay tool RUN_ID STEP --execute` hands the plan to
`corral.agents.replay`, which makes the call as a new run that goes through the agent's scopes,
the tenant's policies, approvals, the kill switch and the budgets, like any call.
"""

from __future__ import annotations

import json
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

from corral.errors import UsageError
from corral.observe.diffs import agent_task
from corral.observe.journal_view import RunView, StepView

REPLAY_WORKFLOW = "replay:tool"
"""The workflow whose runs re-make recorded tool calls (`corral.agents.replay`)."""


@dataclass(frozen=True)
class ReplayPlan:
    """A recorded tool call, as a replay would make it again."""

    run_id: str
    seq: int
    tenant: str
    workflow: str
    """The original run's workflow: a replay is governed as a call of that workflow."""
    tool: str
    call_id: str | None
    agent: str | None
    """The agent whose model asked for the call (after any handoffs)."""
    agents: list[str]
    """The agents the conversation went through to reach `agent`, the run's own agent first:
    each one's scopes bound the call, as they did in the run."""
    arguments: dict[str, Any]
    """What would be sent: the approved arguments if a human approved the call, else the
    model's."""
    model_arguments: Any
    approved_arguments: dict[str, Any] | None
    approval_id: str | None
    scopes: dict[str, Any] | None
    """The scope chain of the agents above the run (a delegated run's `AgentTask.scopes`)."""
    at_most_once: bool
    status: str
    """The original step's status."""
    outcome: str | None
    """`done`, or `approval_required` (the call waited for a human and did not run)."""
    value: Any
    error: dict[str, Any] | None
    decision: dict[str, Any] | None
    """The policy decision recorded: from the outcome, or from a denial's error."""


def plan_replay(view: RunView, seq: int) -> ReplayPlan:
    """What replaying tool step `seq` of `view`'s run would send.

    Raises:
        UsageError: no step `seq`, not a tool call, or a call whose recorded arguments are not
            a JSON object (it never ran: there is nothing to replay).
    """
    step = next((s for s in view.steps if s.seq == seq), None)
    tools = ", ".join(f"{s.seq} ({s.name})" for s in view.steps if s.category == "tool")
    hint = f"its tool steps: {tools}" if tools else "it has no tool steps"
    if step is None:
        raise UsageError(f"run {view.run_id} has no step {seq}; {hint}", run_id=view.run_id)
    call = step.call
    if step.category != "tool" or call is None or step.tool is None:
        raise UsageError(
            f"step {seq} of run {view.run_id} ({step.name}) is not a recorded tool call; {hint}",
            run_id=view.run_id,
            seq=seq,
        )
    approved = call.get("approved_arguments")
    arguments = approved if approved is not None else call.get("arguments")
    if not isinstance(arguments, Mapping):
        raise UsageError(
            f"step {seq} of run {view.run_id}: the recorded arguments of {step.tool!r} are not "
            f"a JSON object ({_short(arguments)}): the call never ran, so there is nothing to "
            "replay",
            run_id=view.run_id,
            seq=seq,
        )
    call_id = call.get("call_id")
    caller = _caller(view, step, call_id if isinstance(call_id, str) else None)
    result = step.result if isinstance(step.result, Mapping) else {}
    approval_id = call.get("approval_id")
    return ReplayPlan(
        run_id=view.run_id,
        seq=seq,
        tenant=view.run.tenant,
        workflow=view.run.workflow,
        tool=step.tool,
        call_id=call_id if isinstance(call_id, str) else None,
        agent=caller,
        agents=_path(view, step, caller) if caller else [],
        arguments=dict(arguments),
        model_arguments=call.get("arguments"),
        approved_arguments=dict(approved) if isinstance(approved, Mapping) else None,
        approval_id=approval_id if isinstance(approval_id, str) else None,
        scopes=agent_task(view.run).scopes,
        at_most_once=step.record.at_most_once,
        status=step.status,
        outcome=str(result["status"]) if "status" in result else None,
        value=step.tool_value,
        error=_error(step),
        decision=step.decision or _denial(step),
    )


def replay_plan_json(plan: ReplayPlan) -> dict[str, Any]:
    """The JSON shape of `corral replay tool --json` (the dry run)."""
    return {
        "run_id": plan.run_id,
        "step": plan.seq,
        "tenant": plan.tenant,
        "workflow": plan.workflow,
        "tool": plan.tool,
        "call_id": plan.call_id,
        "agent": plan.agent,
        "agents": plan.agents,
        "arguments": plan.arguments,
        "model_arguments": plan.model_arguments,
        "approved_arguments": plan.approved_arguments,
        "approval_id": plan.approval_id,
        "at_most_once": plan.at_most_once,
        "original": {
            "status": plan.status,
            "outcome": plan.outcome,
            "value": plan.value,
            "error": plan.error,
            "decision": plan.decision,
        },
    }


def render_replay_plan(plan: ReplayPlan) -> str:
    """The dry run for people: the call that would be sent, and what it did the first time."""
    through = " -> ".join(plan.agents) if len(plan.agents) > 1 else None
    lines = [
        f"replay of run {plan.run_id} step {plan.seq} (dry run: nothing is sent)",
        f"  tool:       {plan.tool}" + (" (at most once)" if plan.at_most_once else ""),
        f"  agent:      {plan.agent or '(unknown)'}"
        + (f" (reached through {through})" if through else "")
        + f", in a run of {plan.workflow}",
        f"  arguments:  {_json(plan.arguments)}",
    ]
    if plan.approved_arguments is not None:
        lines.append(
            f"              as approved in {plan.approval_id}; the model asked for "
            f"{_json(plan.model_arguments)}"
        )
    if plan.error is not None:
        original = f"failed: {plan.error.get('type')}: {plan.error.get('message')}"
    elif plan.outcome == "approval_required":
        original = "waited for a human's approval (the call did not run in this step)"
    else:
        original = f"{plan.status}: returned {_short(plan.value)}"
    lines.append(f"  originally: {original}")
    if plan.decision is not None:
        lines.append(f"  decision:   {_decision_words(plan.decision)}")
    lines.append(
        f"--execute makes this call again as a new run of {REPLAY_WORKFLOW} (this run is not "
        "changed), through the agent's scopes, the tenant's policies, approvals (an earlier "
        "approval does not carry over), the kill switch and the budgets. It is a new call, "
        "with a new idempotency key."
    )
    return "\n".join(lines)


# -- reading the journal -------------------------------------------------------------------------


def _caller(view: RunView, step: StepView, call_id: str | None) -> str | None:
    """The agent whose latest model step before `step` asked for this call."""
    for earlier in reversed([s for s in view.steps if s.seq < step.seq]):
        if earlier.category != "model" or earlier.message is None:
            continue
        for call in earlier.message.get("tool_calls") or []:
            if not isinstance(call, Mapping):
                continue
            if (call_id is not None and call.get("call_id") == call_id) or (
                call_id is None and call.get("name") == step.tool
            ):
                return earlier.agent
    return None


def _path(view: RunView, step: StepView, caller: str) -> list[str]:
    """The agents from the run's own one to `caller`, following handoffs backwards."""
    path, current, before = [caller], caller, step.seq
    while True:
        handoff = next(
            (
                s
                for s in reversed(view.steps)
                if s.seq < before and s.category == "handoff" and s.subject == current
            ),
            None,
        )
        if handoff is None:
            return path
        models = [s for s in view.steps if s.seq < handoff.seq and s.category == "model"]
        source = models[-1].agent if models else None
        if source is None or source in path:
            return path
        path.insert(0, source)
        current, before = source, handoff.seq


def _error(step: StepView) -> dict[str, Any] | None:
    if step.error is None:
        return None
    return {k: v for k, v in step.error.items() if k not in ("traceback", "module")}


def _denial(step: StepView) -> dict[str, Any] | None:
    """A denial's decision, from the error it raised (`PolicyDenied` carries its ids)."""
    error = step.error or {}
    if error.get("code") != "policy_denied":
        return None
    return {
        "effect": "deny",
        "policy": error.get("policy"),
        "version": error.get("version"),
        "rule": error.get("rule"),
        "reason": error.get("reason") or error.get("message"),
    }


def _decision_words(decision: Mapping[str, Any]) -> str:
    effect = decision.get("effect", "?")
    by = ""
    if decision.get("policy"):
        by = f" by policy {decision['policy']} v{decision.get('version')}"
    if decision.get("rule"):
        by += f", rule {decision['rule']}"
    reason = decision.get("reason")
    return f"{effect}{by}" + (f": {reason}" if reason else " (no rule matched: the default)")


def _json(value: Any) -> str:
    return json.dumps(value, ensure_ascii=False, sort_keys=True)


def _short(value: Any, limit: int = 300) -> str:
    text = _json(value)
    return text if len(text) <= limit else text[: limit - 1] + "…"


__all__ = [
    "REPLAY_WORKFLOW",
    "ReplayPlan",
    "plan_replay",
    "render_replay_plan",
    "replay_plan_json",
]
