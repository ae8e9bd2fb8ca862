"""What each step changed: the conversation rebuilt from the journal is the one the model saw.

Each flow runs a real agent on the scripted model through a recording wrapper; before every model
step, the conversation rebuilt from the journal must equal the messages that model call was
given — through failed calls, approvals (approved, edited, rejected), parallel calls, handoffs
and delegated child runs.
"""

from __future__ import annotations

import json
from typing import Any, TypeVar

from typer.testing import CliRunner

from corral import Corral
from corral.agents import Agent
from corral.governance import approvals
from corral.governance.policy_store import apply_policy
from corral.models import Call, Message, ModelRequest, ModelResponse, ScriptedModel, reply
from corral.models.scripted import Turn
from corral.observe import RunView, load_run_view
from corral.observe.diffs import (
    FEEDBACK_NOT_JOURNALED,
    NO_MEMORY,
    rebuild_conversation,
    render_step_diff,
    step_diff,
    step_diff_json,
)
from corral.tools import tool

from .harness import POLICY, add_approver, invoke, prepared

T = TypeVar("T")


@tool
def lookup_order(order_id: str) -> dict[str, str]:
    """Find an order."""
    if order_id == "BROKEN":
        raise RuntimeError("the order database is down")
    return {"order_id": order_id, "status": "delivered"}


@tool(scopes=["payments:refund"])
def issue_refund(order_id: str, amount_cents: int) -> str:
    """Refund an order."""
    return f"refunded {amount_cents} on {order_id}"


class Recording(ScriptedModel):
    """A scripted model that keeps every request it is sent, in order."""

    def __init__(self, rules: Any) -> None:
        super().__init__(rules=rules)
        self.requests: list[ModelRequest] = []

    async def complete(self, request: ModelRequest) -> ModelResponse:
        self.requests.append(request)
        return await super().complete(request)


def tool_results(request: ModelRequest) -> list[str]:
    return [m.content for m in request.messages if m.role == "tool"]


def dumped(messages: list[Message]) -> list[dict[str, Any]]:
    return [m.model_dump() for m in messages]


def assert_rebuilt_as_sent(view: RunView, model: Recording, agents: set[str]) -> None:
    """Before each model step of `agents`, the rebuilt conversation is what the model got."""
    conversation = rebuild_conversation(view)
    model_steps = [s for s in view.steps if s.category == "model" and s.agent in agents]
    assert len(model_steps) == len(model.requests)
    for step, request in zip(model_steps, model.requests, strict=True):
        assert dumped(conversation.messages(upto=step.seq - 1)) == dumped(request.messages)


async def run_to_end(corral: Corral, agent: Agent[Any], text: str) -> RunView:
    handle = await corral.start(agent, text)
    await corral.run_until_idle()
    view = await load_run_view(corral.store, handle.run_id)
    assert view is not None
    return view


async def test_failures_and_parallel_calls_rebuild_as_the_model_saw_them(corral: Corral) -> None:
    def rules(request: ModelRequest) -> Turn | str:
        results = tool_results(request)
        if not results:
            return reply(
                "Checking both orders.",
                Call("lookup_order", {"order_id": "A-1"}),
                Call("lookup_order", {"order_id": "BROKEN"}),
                Call("no_such_tool", {}),
                Call("lookup_order", "{not json"),
            )
        return f"seen {len(results)} results"

    model = Recording(rules)
    agent = Agent("support", model=model, tools=[lookup_order], max_identical_calls=None)
    view = await run_to_end(corral, agent, "Where are A-1 and BROKEN?")
    assert view.run.status == "succeeded", view.run.error
    assert_rebuilt_as_sent(view, model, {"support"})
    last = rebuild_conversation(view).messages()
    assert [m.role for m in last] == [
        "user",
        "assistant",
        "tool",
        "tool",
        "tool",
        "tool",
        "assistant",
    ]
    # What the model was told exactly is checked above; here, that it is the failure.
    assert last[3].content.startswith("Error (")
    assert "the order database is down" in last[3].content
    broken = step_diff(view, 3)
    assert [m.content for m in broken.added] == [last[3].content]
    assert broken.memory_changes == []
    assert broken.memory_note == NO_MEMORY


async def test_approvals_edited_and_rejected_rebuild_as_the_model_saw_them(
    corral: Corral,
) -> None:
    await apply_policy(
        corral.store, corral.tenant, POLICY, source="p.yaml", actor="human:t", now=0.0
    )
    await add_approver(corral, "sam", "finance")

    def rules(request: ModelRequest) -> Turn | str:
        if not tool_results(request):
            return reply(
                "The parcel arrived broken: refunding both orders.",
                Call("issue_refund", {"order_id": "A-1", "amount_cents": 90000}),
                Call("lookup_order", {"order_id": "A-1"}),
                Call("issue_refund", {"order_id": "A-2", "amount_cents": 70000}),
            )
        return "done"

    model = Recording(rules)
    agent = Agent("refunds", model=model, tools=[issue_refund, lookup_order], scopes=["payments:*"])
    handle = await corral.start(agent, "Refund A-1 and A-2")
    await corral.run_until_idle()
    first, second = await corral.store.read_script(
        lambda d: approvals.list_approvals(corral.tenant, status="pending")
    )
    # The requests may be listed in any order: pick them by their arguments.
    by_order = {a.arguments["order_id"]: a for a in (first, second)}
    await approvals.decide(
        corral,
        by_order["A-1"].approval_id,
        approve=True,
        principal="sam",
        reason="receipt checked",
        edited_arguments={"order_id": "A-1", "amount_cents": 80000},
    )
    await corral.run_until_idle()
    await approvals.decide(
        corral, by_order["A-2"].approval_id, approve=False, principal="sam", reason="no receipt"
    )
    await corral.run_until_idle()
    view = await load_run_view(corral.store, handle.run_id)
    assert view is not None
    assert view.run.status == "succeeded", view.run.error
    assert_rebuilt_as_sent(view, model, {"refunds"})

    tool_messages = [m for m in rebuild_conversation(view).messages() if m.role == "tool"]
    assert [m.content for m in tool_messages] == [
        "refunded 80000 on A-1",
        json.dumps({"order_id": "A-1", "status": "delivered"}),
        "Error (ApprovalRejected): the call was rejected by sam: no receipt",
    ]
    names = [s.name for s in view.steps]
    waiting = names.index("tool:issue_refund")
    held = step_diff(view, waiting + 1)
    assert held.added == []
    assert held.notes == [
        "the call waits for a human's approval: Refunds over $500 are checked by finance."
    ]
    approved_step = next(
        s for s in view.steps if s.call and s.call.get("approval_id") == by_order["A-1"].approval_id
    )
    approved = step_diff(view, approved_step.seq)
    assert [m.content for m in approved.added] == ["refunded 80000 on A-1"]
    assert any("the approver edited the arguments" in note for note in approved.notes)
    rejected_signal = next(
        s for s in view.steps if s.name == approvals.signal_name(by_order["A-2"].approval_id)
    )
    rejected = step_diff(view, rejected_signal.seq)
    assert [m.content for m in rejected.added] == [
        "Error (ApprovalRejected): the call was rejected by sam: no receipt"
    ]


async def test_handoffs_and_delegated_runs_rebuild_as_the_models_saw_them(
    corral: Corral,
) -> None:
    def checker_rules(request: ModelRequest) -> str:
        return f"checked: {request.messages[-1].content}"

    def triage_rules(request: ModelRequest) -> Turn | str:
        if request.agent == "triage":
            if not tool_results(request):
                return reply("A specialist should check.", Call("ask_checker", {"task": "A-1"}))
            return reply("Over to billing.", Call("transfer_to_billing", {}))
        if not any(m.role == "tool" and m.content.startswith("{") for m in request.messages):
            return reply("", Call("lookup_order", {"order_id": "A-1"}))
        return "billing is done"

    checker = Agent("checker", model=ScriptedModel(rules=checker_rules))
    model = Recording(triage_rules)
    billing = Agent("billing", model=model, tools=[lookup_order])
    triage = Agent("triage", model=model, delegates=[checker], handoffs=[billing])
    view = await run_to_end(corral, triage, "My order A-1 is wrong")
    assert view.run.status == "succeeded", view.run.error
    assert_rebuilt_as_sent(view, model, {"triage", "billing"})
    child_result = next(s for s in view.steps if s.record.kind == "child.result")
    diff = step_diff(view, child_result.seq)
    assert [(m.role, m.content) for m in diff.added] == [("tool", "checked: A-1")]
    handoff = next(s for s in view.steps if s.category == "handoff")
    assert [m.content for m in step_diff(view, handoff.seq).added] == ["Transferred to billing."]


async def test_a_refused_answer_says_its_feedback_is_not_journaled(corral: Corral) -> None:
    model = ScriptedModel(["not a number", "42"])
    view = await run_to_end(corral, Agent("counter", model=model, output_type=int), "count")
    assert view.run.status == "succeeded", view.run.error
    refused, accepted = step_diff(view, 1), step_diff(view, 2)
    assert refused.notes == [FEEDBACK_NOT_JOURNALED]
    assert accepted.notes == []
    assert [m.content for m in accepted.added] == ["42"]


async def test_the_rendered_diff_shows_context_and_added_lines(corral: Corral) -> None:
    model = ScriptedModel([reply("Looking.", Call("lookup_order", {"order_id": "A-1"})), "ok"])
    view = await run_to_end(corral, Agent("support", model=model, tools=[lookup_order]), "A-1?")
    text = render_step_diff(step_diff(view, 2))
    assert text.splitlines()[0] == f"run {view.run_id} step 2: tool:lookup_order (tool)"
    assert " user: A-1?" in text.splitlines()
    assert (
        "+tool [call_support_0_0]: " + json.dumps({"order_id": "A-1", "status": "delivered"})
        in text.splitlines()
    )
    data = step_diff_json(step_diff(view, 1))
    assert data["messages"]["before"] == 1
    assert data["messages"]["added"] == [
        {
            "role": "assistant",
            "content": "Looking.",
            "author": "support",
            "tool_calls": [
                {
                    "call_id": "call_support_0_0",
                    "name": "lookup_order",
                    "arguments": {"order_id": "A-1"},
                }
            ],
        }
    ]


def test_runs_diff_on_the_command_line(db_url: str) -> None:
    async def build(corral: Corral) -> str:
        model = ScriptedModel([reply("", Call("lookup_order", {"order_id": "A-1"})), "ok"])
        handle = await corral.start(Agent("support", model=model, tools=[lookup_order]), "A-1?")
        await corral.run_until_idle()
        return handle.run_id

    run_id = prepared(db_url, build)
    runner = CliRunner()
    text = invoke(runner, db_url, "runs", "diff", run_id, "2")
    assert text.exit_code == 0, text.stderr
    assert "+tool [call_support_0_0]:" in text.stdout
    data = json.loads(invoke(runner, db_url, "runs", "diff", run_id, "3", "--json").stdout)
    assert [m["content"] for m in data["messages"]["added"]] == ["ok"]
    missing = invoke(runner, db_url, "runs", "diff", run_id, "9")
    assert missing.exit_code == 2
    assert "has no step 9" in missing.stderr
    other_tenant = invoke(runner, db_url, "--tenant", "acme", "runs", "diff", run_id, "2")
    assert other_tenant.exit_code == 2
    assert "no run" in other_tenant.stderr
