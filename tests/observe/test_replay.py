"""Tool-call replay: the dry run shows what would be sent; --execute sends it, governed.

The agents at this module's top level are also the app of the command-line tests
(`--app` names this module).
"""

from __future__ import annotations

import dataclasses
import json
from typing import Any

import pytest
from typer.testing import CliRunner

from corral import Corral, UsageError, workflow
from corral.agents import Agent
from corral.agents.replay import (
    ReplayResult,
    ReplayTask,
    agent_of,
    agents_of,
    check_replayable,
    replay_workflow,
    with_replay,
)
from corral.governance import approvals, pauses
from corral.governance.policy_store import apply_policy
from corral.models import Call, ModelRequest, ScriptedModel, reply
from corral.models.scripted import Turn
from corral.observe import RunView, load_run_view
from corral.observe.replay import REPLAY_WORKFLOW, plan_replay, render_replay_plan
from corral.store.scripts import Dialect, Script
from corral.tools import tool

from .harness import add_approver, invoke, prepared

POLICY = """
name: refunds
rules:
  - name: large-refunds-need-approval
    match: {tools: [issue_refund]}
    when: args.amount_cents > 50000
    effect: require_approval
    reason: Refunds over $500 are checked by finance.
    approval: {approvers: [finance], deadline: 1h}
"""

FROZEN = """
name: frozen
rules:
  - name: no-refunds-from-this-workflow
    match: {tools: [issue_refund], workflows: ["agent:refunds"]}
    effect: deny
    reason: Refunds are frozen for this workflow.
"""

made: list[dict[str, Any]] = []


@tool
def lookup_order(order_id: str) -> dict[str, str]:
    """Find an order."""
    return {"order_id": order_id, "status": "delivered"}


@tool(scopes=["payments:refund"])
def issue_refund(order_id: str, amount_cents: int) -> str:
    """Refund an order."""
    made.append({"order_id": order_id, "amount_cents": amount_cents})
    return f"refunded {amount_cents} on {order_id}"


def refund_rules(request: ModelRequest) -> Turn | str:
    if not any(m.role == "tool" for m in request.messages):
        amount = int(request.messages[-1].content.split()[-1])
        return reply(
            "Refunding.", Call("issue_refund", {"order_id": "A-1", "amount_cents": amount})
        )
    return "done"


refunds = Agent(
    "refunds",
    model=ScriptedModel(rules=refund_rules),
    tools=[issue_refund],
    scopes=["payments:refund"],
)


def boss_rules(request: ModelRequest) -> Turn | str:
    if not any(m.role == "tool" for m in request.messages):
        return reply("", Call("ask_refunds", {"task": request.messages[-1].content}))
    return "reported"


boss = Agent("boss", model=ScriptedModel(rules=boss_rules), delegates=[refunds], scopes=["*"])


def billing_rules(request: ModelRequest) -> Turn | str:
    if request.agent == "triage":
        return reply("", Call("transfer_to_billing", {}))
    if not any(m.role == "tool" and m.content.startswith("{") for m in request.messages):
        return reply("", Call("lookup_order", {"order_id": "A-1"}))
    return "found it"


billing = Agent("billing", model=ScriptedModel(rules=billing_rules), tools=[lookup_order])
triage = Agent("triage", model=ScriptedModel(rules=billing_rules), handoffs=[billing])


@pytest.fixture(autouse=True)
def _clear() -> None:
    made.clear()


async def finished(corral: Corral, target: Any, text: str) -> RunView:
    handle = await corral.start(target, text)
    await corral.run_until_idle()
    view = await load_run_view(corral.store, handle.run_id)
    assert view is not None
    return view


async def approve_pending(corral: Corral, **edit: Any) -> None:
    for request in await corral.store.read_script(
        lambda d: approvals.list_approvals(corral.tenant, status="pending")
    ):
        await approvals.decide(
            corral,
            request.approval_id,
            approve=True,
            principal="sam",
            reason="checked",
            edited_arguments={**request.arguments, **edit} if edit else None,
        )
    await corral.run_until_idle()


async def replayed(corral: Corral, run_id: str, seq: int) -> RunView:
    """Replay step `seq` of `run_id` as `replay tool --execute` does; the replay run's view."""
    corral.register(replay_workflow(agents_of([boss.workflow, triage.workflow])))
    original = await load_run_view(corral.store, run_id, descendants=False)
    assert original is not None
    handle = await corral.start(REPLAY_WORKFLOW, ReplayTask.of(plan_replay(original, seq)))
    await corral.run_until_idle()
    view = await load_run_view(corral.store, handle.run_id)
    assert view is not None
    return view


def tool_seq(view: RunView, *, approved: bool = False) -> int:
    """The seq of the view's tool step (the approved one, with `approved`)."""
    return next(
        s.seq
        for s in view.steps
        if s.category == "tool" and bool((s.call or {}).get("approval_id")) == approved
    )


# -- the dry run ---------------------------------------------------------------------------------


async def test_the_dry_run_shows_the_approved_call_and_its_outcome(corral: Corral) -> None:
    await apply_policy(corral.store, corral.tenant, POLICY, source="p", actor="human:t", now=0.0)
    await add_approver(corral, "sam", "finance")
    started = await finished(corral, boss, "Refund 90000")
    await approve_pending(corral, amount_cents=80000)
    parent = await load_run_view(corral.store, started.run_id)
    assert parent is not None
    (child,) = parent.children.values()
    plan = plan_replay(child, tool_seq(child, approved=True))
    assert (plan.tool, plan.agent, plan.agents) == ("issue_refund", "refunds", ["refunds"])
    assert plan.arguments == {"order_id": "A-1", "amount_cents": 80000}
    assert plan.model_arguments == {"order_id": "A-1", "amount_cents": 90000}
    assert plan.approval_id is not None
    assert (plan.status, plan.outcome, plan.value) == ("succeeded", "done", "refunded 80000 on A-1")
    assert plan.decision is not None
    assert plan.decision["rule"] == "large-refunds-need-approval"
    assert plan.scopes == {"links": [["*"]]}  # the boss's chain, which the refunds run inherited
    assert plan.workflow == "agent:refunds"
    text = render_replay_plan(plan)
    assert "(dry run: nothing is sent)" in text
    assert 'arguments:  {"amount_cents": 80000, "order_id": "A-1"}' in text
    assert made == [{"order_id": "A-1", "amount_cents": 80000}]  # the dry run sent nothing


async def test_the_dry_run_refuses_what_is_not_a_recorded_call(corral: Corral) -> None:
    model = ScriptedModel(
        [
            reply("", Call("no_such_tool", {})),
            reply("", Call("lookup_order", "{not json")),
            "gave up",
        ]
    )
    view = await finished(corral, Agent("helper", model=model, tools=[lookup_order]), "go")
    names = [s.name for s in view.steps]
    assert names[:2] == ["model:helper", "tool:no_such_tool"]
    with pytest.raises(UsageError, match=r"step 1 .* is not a recorded tool call; its tool steps"):
        plan_replay(view, 1)
    with pytest.raises(UsageError, match="is not a recorded tool call"):
        plan_replay(view, 2)  # an unknown tool: nothing was called
    with pytest.raises(UsageError, match="not a JSON object"):
        plan_replay(view, names.index("tool:lookup_order") + 1)
    with pytest.raises(UsageError, match="has no step 99"):
        plan_replay(view, 99)


async def test_the_agents_of_a_call_follow_handoffs(corral: Corral) -> None:
    view = await finished(corral, triage, "where is A-1")
    plan = plan_replay(view, tool_seq(view))
    assert (plan.agent, plan.agents) == ("billing", ["triage", "billing"])


def test_the_agent_behind_a_workflow_is_found() -> None:
    assert agent_of(refunds.workflow) is refunds
    # A run started by reference renames the workflow, keeping its function.
    renamed = dataclasses.replace(refunds.workflow, name="observe.test_replay:refunds")
    assert agent_of(renamed) is refunds

    @workflow
    async def plain(ctx: Any, text: str) -> str:
        return text

    assert agent_of(plain) is None
    assert sorted(agents_of([boss.workflow, plain])) == ["boss", "refunds"]
    # What a worker registers to resume replays: the replay workflow when there are agents.
    assert [wf.name for wf in with_replay([refunds.workflow])] == ["agent:refunds", REPLAY_WORKFLOW]
    assert with_replay([plain]) == [plain]
    twice = with_replay(with_replay([refunds.workflow]))
    assert [wf.name for wf in twice] == ["agent:refunds", REPLAY_WORKFLOW]


# -- --execute -----------------------------------------------------------------------------------


async def test_execute_makes_the_call_again_as_a_new_run(corral: Corral) -> None:
    original = await finished(corral, refunds, "Refund 100")
    journal = await corral.journal(original.run_id)
    replay = await replayed(corral, original.run_id, 2)
    assert replay.run.workflow == REPLAY_WORKFLOW
    assert replay.run.status == "succeeded", replay.run.error
    assert [(s.name, s.status) for s in replay.steps] == [("tool:issue_refund", "succeeded")]
    assert made == [{"order_id": "A-1", "amount_cents": 100}] * 2
    task = json.loads(replay.run.input)
    assert (task["run_id"], task["step"], task["tool"]) == (original.run_id, 2, "issue_refund")
    result = ReplayResult.model_validate_json(replay.run.result or "")
    assert result.content == "refunded 100 on A-1"
    assert await corral.journal(original.run_id) == journal  # the original is untouched


async def test_execute_is_governed_as_a_call_of_the_original_workflow(corral: Corral) -> None:
    original = await finished(corral, refunds, "Refund 100")
    await apply_policy(corral.store, corral.tenant, FROZEN, source="f", actor="human:t", now=0.0)
    replay = await replayed(corral, original.run_id, 2)
    (step,) = replay.steps
    assert step.status == "failed"
    assert step.error is not None
    assert (step.error["code"], step.error["rule"]) == (
        "policy_denied",
        "no-refunds-from-this-workflow",
    )
    assert made == [{"order_id": "A-1", "amount_cents": 100}]  # only the original call


async def test_execute_asks_for_a_new_approval(corral: Corral) -> None:
    await apply_policy(corral.store, corral.tenant, POLICY, source="p", actor="human:t", now=0.0)
    await add_approver(corral, "sam", "finance")
    started = await finished(corral, refunds, "Refund 90000")
    await approve_pending(corral)
    original = await load_run_view(corral.store, started.run_id)
    assert original is not None
    replay = await replayed(corral, original.run_id, tool_seq(original, approved=True))
    assert replay.run.status == "waiting"
    (pending,) = await corral.store.read_script(
        lambda d: approvals.list_approvals(corral.tenant, status="pending")
    )
    assert (pending.run_id, pending.arguments) == (
        replay.run_id,
        {"order_id": "A-1", "amount_cents": 90000},
    )
    assert len(made) == 1
    await approve_pending(corral)
    assert (await corral.get_run(replay.run_id)).status == "succeeded"
    assert made == [{"order_id": "A-1", "amount_cents": 90000}] * 2


async def test_a_paused_agent_stops_the_replay(corral: Corral) -> None:
    original = await finished(corral, refunds, "Refund 100")

    def pause(dialect: Dialect) -> Script[pauses.Pause]:
        return (
            yield from pauses.pause(
                corral.tenant,
                pauses.agent_target("refunds"),
                actor="human:ops",
                reason="incident",
                now=0.0,
                dialect=dialect,
            )
        )

    await corral.store.run_script(pause)
    replay = await replayed(corral, original.run_id, 2)
    assert replay.run.status == "failed"
    assert json.loads(replay.run.error or "")["code"] == "paused"
    assert len(made) == 1


def test_a_replay_needs_the_agent_and_its_tool() -> None:
    task = ReplayTask(
        run_id="r", step=2, tool="issue_refund", arguments={}, agents=["ghost"], workflow="w"
    )
    with pytest.raises(UsageError, match="agent\\(s\\) ghost are not in the loaded app"):
        check_replayable(task, agents_of([refunds.workflow]))
    renamed = task.model_copy(update={"agents": ["refunds"], "tool": "drop_tables"})
    with pytest.raises(UsageError, match="has no tool 'drop_tables'"):
        check_replayable(renamed, agents_of([refunds.workflow]))


# -- the command line ----------------------------------------------------------------------------


def test_replay_tool_on_the_command_line(db_url: str) -> None:
    async def build(corral: Corral) -> str:
        handle = await corral.start(refunds, "Refund 100")
        await corral.run_until_idle()
        return handle.run_id

    run_id = prepared(db_url, build)
    runner = CliRunner()
    dry = invoke(runner, db_url, "replay", "tool", run_id, "2")
    assert dry.exit_code == 0, dry.stderr
    assert "dry run: nothing is sent" in dry.stdout
    data = json.loads(invoke(runner, db_url, "replay", "tool", run_id, "2", "--json").stdout)
    assert data["arguments"] == {"order_id": "A-1", "amount_cents": 100}
    assert data["original"]["value"] == "refunded 100 on A-1"
    assert len(made) == 1

    done = invoke(runner, db_url, "replay", "tool", run_id, "2", "--execute", app=__name__)
    assert done.exit_code == 0, done.stderr
    assert "now:        returned refunded 100 on A-1" in done.stdout
    assert len(made) == 2
    executed = json.loads(
        invoke(
            runner, db_url, "replay", "tool", run_id, "2", "--execute", "--json", app=__name__
        ).stdout
    )
    assert executed["replay_of"] == {"run_id": run_id, "step": 2}
    assert executed["run"]["workflow"] == REPLAY_WORKFLOW
    assert executed["tool_step"]["value"] == "refunded 100 on A-1"
    assert len(made) == 3

    without_app = invoke(
        runner, db_url, "replay", "tool", run_id, "2", "--execute", app=f"{__name__}:billing"
    )
    assert without_app.exit_code == 2
    assert "agent(s) refunds are not in the loaded app" in without_app.stderr
    assert len(made) == 3
