"""Tool-call replay, executed: a recorded call made again, as a new governed run.

`corral replay tool RUN_ID STEP --execute` re-makes the call a tool step recorded (see
`corral.observe.replay` for the dry run: what would be sent). It is made as a new run of the
workflow `replay:tool`, whose input (`ReplayTask`) names the original run and step, so the
replay is journaled like any run and the original run is left untouched.

The call goes through the same code as a call the model makes in the tool loop: the tool step
(`tool:<name>`, with the tool's own retries, timeout and at-most-once setting), then the
governor's checks in it — the scopes of the agents the conversation went through, the tenant's
policies (which see the original run's workflow, so a policy written for that workflow governs
its replays too), the kill switch and the budgets — and, when a policy requires it, an approval
request the run waits for durably. An approval given to the original call does not carry over:
a replay is a new call, with its own idempotency key.

The tool is found on the agent that made the original call, among the agents the app provides
(`replay_workflow(agents)`; `agents_of(workflows)` finds them among loaded workflows).
"""

from __future__ import annotations

import dataclasses
import json
from collections.abc import Iterable, Mapping
from typing import Any

from pydantic import BaseModel

from corral.agents.agent import Agent
from corral.agents.governed import Governed
from corral.agents.loop import ToolLoop
from corral.engine import RunContext, Workflow
from corral.errors import UsageError
from corral.governance.identity import ScopeChain
from corral.models import ToolCall
from corral.observe.replay import REPLAY_WORKFLOW, ReplayPlan
from corral.tools import Tool


class ReplayTask(BaseModel):
    """The input of a `replay:tool` run: which recorded call to make again, and how."""

    run_id: str
    """The original run."""
    step: int
    """The original tool step's seq."""
    tool: str
    arguments: dict[str, Any]
    """The arguments to send: the approved ones if a human approved the original call."""
    agents: list[str]
    """The agents the conversation went through to the calling agent (last), the run's own
    agent first: each one's scopes bound the call, as in the original run."""
    workflow: str
    """The original run's workflow: what the policies see."""
    scopes: ScopeChain | None = None
    """The scope chain of the agents above the original run (a delegated run's)."""
    call_id: str | None = None

    @classmethod
    def of(cls, plan: ReplayPlan) -> ReplayTask:
        """The task that replays `plan` (see `corral.observe.replay.plan_replay`)."""
        if not plan.agents:
            raise UsageError(
                f"step {plan.seq} of run {plan.run_id}: no model step of the run asked for this "
                "call, so the agent whose tool it is is unknown; it cannot be replayed",
                run_id=plan.run_id,
                seq=plan.seq,
            )
        return cls(
            run_id=plan.run_id,
            step=plan.seq,
            tool=plan.tool,
            arguments=plan.arguments,
            agents=plan.agents,
            workflow=plan.workflow,
            scopes=ScopeChain.model_validate(plan.scopes) if plan.scopes is not None else None,
            call_id=plan.call_id,
        )


class ReplayResult(BaseModel):
    """The output of a `replay:tool` run: what the call returned, as its agent's model would
    have been told (`Error (Type): …` for a failure, a denial or a rejected approval). The
    replay run's `tool:<name>` step holds the value and the decision."""

    run_id: str
    step: int
    tool: str
    content: str


def agent_of(workflow: Workflow[Any, Any]) -> Agent[Any] | None:
    """The agent whose own workflow (`Agent.workflow`, `agent:<name>`) this is, else None.

    The workflow's function is the closure `Agent.workflow` made over its agent; a workflow
    renamed to a `module:attr` reference keeps that function.
    """
    for cell in getattr(workflow.fn, "__closure__", None) or ():
        try:
            value = cell.cell_contents
        except ValueError:  # an empty cell
            continue
        if isinstance(value, Agent) and value.workflow.fn is workflow.fn:
            return value
    return None


def agents_of(workflows: Iterable[Workflow[Any, Any]]) -> dict[str, Agent[Any]]:
    """The agents behind these workflows, and every agent they may hand off or delegate to,
    by name (the first found wins when two share a name)."""
    found: dict[str, Agent[Any]] = {}
    for wf in workflows:
        agent = agent_of(wf)
        if agent is None:
            continue
        for reachable in agent.reachable():
            found.setdefault(reachable.name, reachable)
    return found


def check_replayable(task: ReplayTask, agents: Mapping[str, Agent[Any]]) -> Agent[Any]:
    """The agent that makes the call; `UsageError` (with what to do) if it cannot be found or
    has no tool of that name."""
    missing = [name for name in task.agents if name not in agents]
    if missing:
        known = ", ".join(sorted(agents)) or "none"
        raise UsageError(
            f"cannot replay step {task.step} of run {task.run_id}: agent(s) "
            f"{', '.join(missing)} are not in the loaded app (agents found: {known}); load the "
            "module that defines them with --app (or CORRAL_APP)",
            run_id=task.run_id,
            agent=missing[0],
        )
    agent = agents[task.agents[-1]]
    has_toolsets = any(not isinstance(item, Tool) for item in agent.tools)
    own = [item.name for item in agent.tools if isinstance(item, Tool)]
    if task.tool not in own and not has_toolsets:
        raise UsageError(
            f"cannot replay step {task.step} of run {task.run_id}: agent {agent.name!r} has no "
            f"tool {task.tool!r} now (its tools: {', '.join(own) or 'none'})",
            run_id=task.run_id,
            agent=agent.name,
            tool=task.tool,
        )
    return agent


def replay_workflow(agents: Mapping[str, Agent[Any]] | Iterable[Agent[Any]]) -> Workflow[Any, Any]:
    """The `replay:tool` workflow, making calls with the tools of `agents` (register it, with
    the same agents, wherever replay runs are executed: the process that starts one, and any
    worker that resumes one after its approval)."""
    by_name = dict(agents) if isinstance(agents, Mapping) else {a.name: a for a in agents}

    async def replay_tool(ctx: RunContext, task: ReplayTask) -> ReplayResult:
        agent = check_replayable(task, by_name)
        chain = task.scopes or ScopeChain()
        for name in task.agents[:-1]:
            chain = chain.extend(by_name[name].scopes)
        loop = ToolLoop(ctx, agent, depth=0, listener=None, chain=chain)
        # Governed as a call of the original workflow: its policies and budgets apply.
        loop.governed = Governed(
            loop.governed.governor,
            dataclasses.replace(loop.governed.subject, workflow=task.workflow),
        )
        catalog = await loop._catalog(agent)
        entry = catalog.get(task.tool)
        if entry is None or entry.kind not in ("tool", "toolset"):
            raise UsageError(
                f"agent {agent.name!r} offers no tool {task.tool!r} to replay "
                f"(it offers: {', '.join(sorted(catalog)) or 'none'})",
                agent=agent.name,
                tool=task.tool,
            )
        call = ToolCall(
            call_id=f"replay-{task.call_id or task.step}",
            name=task.tool,
            arguments=json.dumps(task.arguments, ensure_ascii=False),
        )
        outcomes = [await loop._dispatch(catalog, agent, call)]
        if outcomes[0].fatal is not None:
            raise outcomes[0].fatal
        await loop._settle_approvals(catalog, agent, [call], outcomes)
        return ReplayResult(
            run_id=task.run_id, step=task.step, tool=task.tool, content=outcomes[0].content
        )

    return Workflow(
        fn=replay_tool,
        name=REPLAY_WORKFLOW,
        input_type=ReplayTask,
        output_type=ReplayResult,
    )


def with_replay(workflows: Iterable[Workflow[Any, Any]]) -> list[Workflow[Any, Any]]:
    """`workflows`, plus the `replay:tool` workflow for the agents among them (if any, and if
    none of them is already named so): what a worker needs to resume replays."""
    found = list(workflows)
    agents = agents_of(found)
    if agents and all(wf.name != REPLAY_WORKFLOW for wf in found):
        found.append(replay_workflow(agents))
    return found


__all__ = [
    "ReplayResult",
    "ReplayTask",
    "agent_of",
    "agents_of",
    "check_replayable",
    "replay_workflow",
    "with_replay",
]
