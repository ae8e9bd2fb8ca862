"""The tool loop under governance: scopes, policies, approval gates, kill switches, budgets.

Every test runs real agents on the scripted model against the store (both backends) with real
policies applied through `policy_store`, and asserts the whole journal.
"""

from __future__ import annotations

import asyncio
import json
from typing import Any

import pytest
from pydantic import BaseModel

from corral import Corral, RunContext
from corral.agents import Agent
from corral.errors import ApprovalRequired
from corral.governance import approvals, pauses
from corral.governance.audit import read_entries
from corral.governance.documents import ApprovalSpec
from corral.governance.policy_store import apply_policy
from corral.models import Call, ModelRequest, ScriptedModel, reply
from corral.models.scripted import Turn
from corral.store.scripts import Dialect, Script
from corral.testing import FakeClock
from corral.tools import ToolContext, tool

from .harness import add_approver, run_error, steps_of

executed: list[tuple[str, dict[str, Any]]] = []


@tool(scopes=["orders:read"])
def lookup_order(order_id: str) -> dict[str, str]:
    """Find an order."""
    executed.append(("lookup_order", {"order_id": order_id}))
    return {"order_id": order_id, "total_cents": "120000"}


@tool(risk="high", scopes=["payments:refund"])
async def issue_refund(order_id: str, amount_cents: int, ctx: ToolContext) -> str:
    """Refund an order."""
    executed.append(("issue_refund", {"order_id": order_id, "amount_cents": amount_cents}))
    return f"refunded {amount_cents} on {order_id} (key {ctx.idempotency_key})"


POLICY = """
name: refunds
rules:
  - name: large-refunds-need-approval
    match: {tools: [issue_refund]}
    when: args.amount_cents > 50000
    effect: require_approval
    reason: Refunds over $500 are checked by finance.
    approval:
      approvers: [finance]
      deadline: 1h
      on_deadline: {on_deadline}
      escalate_to: [finance-leads]
  - name: never-refund-test-orders
    match: {tools: [issue_refund]}
    when: args.order_id.startsWith("TEST-")
    effect: deny
    reason: Test orders are never refunded.
"""


def refund_script(amount: int, order: str = "A-1") -> ScriptedModel:
    def rules(request: ModelRequest) -> Turn:
        results = [m.content for m in request.messages if m.role == "tool"]
        if not results:
            return reply("", Call("issue_refund", {"order_id": order, "amount_cents": amount}))
        return reply(f"done: {results[-1]}")

    return ScriptedModel(rules=rules)


async def apply(corral: Corral, on_deadline: str = "reject") -> None:
    await apply_policy(
        corral.store,
        corral.tenant,
        POLICY.replace("{on_deadline}", on_deadline),
        source="refunds.yaml",
        actor="human:test",
        now=corral.clock.now(),
    )


async def audit_kinds(corral: Corral) -> list[str]:
    return [e.kind for e in await corral.store.read_script(lambda d: read_entries(corral.tenant))]


@pytest.fixture(autouse=True)
def _clear() -> None:
    executed.clear()


async def start(corral: Corral, agent: Agent[Any], text: str = "go") -> str:
    handle = await corral.start(agent, text)
    await corral.run_until_idle()
    return handle.run_id


async def test_a_tool_outside_the_agents_scopes_is_denied(corral: Corral) -> None:
    agent = Agent("clerk", model=refund_script(100), tools=[issue_refund], scopes=["orders:*"])
    run_id = await start(corral, agent)
    journal = await corral.journal(run_id)
    assert [(r.name, r.status) for r in journal] == [
        ("model:clerk", "succeeded"),
        ("tool:issue_refund", "failed"),
        ("model:clerk", "succeeded"),
    ]
    error = json.loads(journal[1].error or "")
    assert error["code"] == "policy_denied"
    assert error["rule"] == "scopes"
    assert "payments:refund" in error["message"]
    assert executed == []
    assert await audit_kinds(corral) == ["policy.decision"]


async def test_a_child_run_never_has_more_scopes_than_its_parent(corral: Corral) -> None:
    refunder = Agent(
        "refunder", model=refund_script(100), tools=[issue_refund], scopes=["payments:refund"]
    )
    boss = Agent(
        "boss",
        scopes=["orders:read"],  # not payments: its delegate cannot refund either
        delegates=[refunder],
        model=ScriptedModel([reply("", Call("ask_refunder", {"task": "refund A-1"})), "ok"]),
    )
    run_id = await start(corral, boss)
    assert (await corral.get_run(run_id)).status == "succeeded"
    (child,) = await corral.list_runs(parent_run_id=run_id)
    assert await steps_of(corral, child.run_id) == [
        ("model:refunder", "succeeded"),
        ("tool:issue_refund", "failed"),
        ("model:refunder", "succeeded"),
    ]
    assert executed == []
    # The same refunder started on its own has its own scopes.
    alone = await start(corral, refunder)
    assert (await steps_of(corral, alone))[1] == ("tool:issue_refund", "succeeded")
    assert executed == [("issue_refund", {"order_id": "A-1", "amount_cents": 100})]


async def test_a_policy_deny_tells_the_model_why(corral: Corral) -> None:
    await apply(corral)
    agent = Agent(
        "refunds", model=refund_script(100, "TEST-9"), tools=[issue_refund], scopes=["payments:*"]
    )
    run_id = await start(corral, agent)
    journal = await corral.journal(run_id)
    error = json.loads(journal[1].error or "")
    assert error["policy"] == "refunds"
    assert error["version"] == 1
    assert error["rule"] == "never-refund-test-orders"
    result = json.loads((await corral.get_run(run_id)).result or "")
    assert "Test orders are never refunded." in result
    assert executed == []


async def test_an_approved_call_runs_once_with_the_approvers_arguments(corral: Corral) -> None:
    await apply(corral)
    await add_approver(corral, "sam", "finance")
    agent = Agent(
        "refunds", model=refund_script(90000), tools=[issue_refund], scopes=["payments:refund"]
    )
    run_id = await start(corral, agent)
    assert (await corral.get_run(run_id)).status == "waiting"
    assert executed == []
    (pending,) = await corral.store.read_script(
        lambda d: approvals.list_approvals(corral.tenant, status="pending")
    )
    assert pending.arguments == {"order_id": "A-1", "amount_cents": 90000}
    assert pending.rule == "large-refunds-need-approval"
    await approvals.decide(
        corral,
        pending.approval_id,
        approve=True,
        principal="sam",
        reason="checked the receipt",
        edited_arguments={"order_id": "A-1", "amount_cents": 80000},
    )
    await corral.run_until_idle()
    run = await corral.get_run(run_id)
    assert run.status == "succeeded", run.error
    assert executed == [("issue_refund", {"order_id": "A-1", "amount_cents": 80000})]
    assert await steps_of(corral, run_id) == [
        ("model:refunds", "succeeded"),
        ("tool:issue_refund", "succeeded"),  # returned: approval required, nothing ran
        ("approval:issue_refund", "succeeded"),
        (approvals.signal_name(pending.approval_id), "succeeded"),
        ("tool:issue_refund", "succeeded"),  # the approved call
        ("model:refunds", "succeeded"),
    ]
    kinds = await audit_kinds(corral)
    assert kinds.count("approval.requested") == 1
    assert kinds.count("approval.decided") == 1


async def test_a_rejected_call_is_reported_and_never_runs(corral: Corral) -> None:
    await apply(corral)
    await add_approver(corral, "sam", "finance")
    agent = Agent(
        "refunds", model=refund_script(90000), tools=[issue_refund], scopes=["payments:refund"]
    )
    run_id = await start(corral, agent)
    (pending,) = await corral.store.read_script(
        lambda d: approvals.list_approvals(corral.tenant, status="pending")
    )
    await approvals.decide(
        corral, pending.approval_id, approve=False, principal="sam", reason="no receipt"
    )
    await corral.run_until_idle()
    result = json.loads((await corral.get_run(run_id)).result or "")
    assert "rejected by sam: no receipt" in result
    assert executed == []


@pytest.mark.parametrize(
    ("on_deadline", "ran"), [("reject", False), ("approve", True), ("escalate", False)]
)
async def test_the_deadline_follows_the_policy(
    corral: Corral, clock: FakeClock, on_deadline: str, ran: bool
) -> None:
    await apply(corral, on_deadline)
    await add_approver(corral, "lee", "finance-leads")
    agent = Agent(
        "refunds", model=refund_script(90000), tools=[issue_refund], scopes=["payments:refund"]
    )
    run_id = await start(corral, agent)
    clock.advance(3601)
    await corral.run_until_idle()
    run = await corral.get_run(run_id)
    if on_deadline == "escalate":
        assert run.status == "waiting"
        (pending,) = await corral.store.read_script(
            lambda d: approvals.list_approvals(corral.tenant, status="pending")
        )
        assert pending.approvers == ("finance-leads",)
        await approvals.decide(
            corral, pending.approval_id, approve=True, principal="lee", reason="ok"
        )
        await corral.run_until_idle()
        run = await corral.get_run(run_id)
        ran = True
    assert run.status == "succeeded", run.error
    assert bool(executed) == ran
    names = [name for name, _ in await steps_of(corral, run_id)]
    assert "approval.deadline:issue_refund" in names


async def test_a_paused_agent_starts_no_tool_call(corral: Corral) -> None:
    def script(dialect: Dialect) -> Script[pauses.Pause]:
        return (
            yield from pauses.pause(
                corral.tenant,
                pauses.agent_target("refunds"),
                actor="human:ops",
                reason="incident 7",
                now=corral.clock.now(),
                dialect=dialect,
            )
        )

    await corral.store.run_script(script)
    agent = Agent(
        "refunds", model=refund_script(100), tools=[issue_refund], scopes=["payments:refund"]
    )
    run_id = await start(corral, agent)
    assert executed == []
    error = await run_error(corral, run_id)
    assert error["code"] == "paused"
    assert "incident 7" in error["message"]


async def test_fifty_parallel_calls_against_a_budget_of_ten(corral: Corral) -> None:
    await apply_policy(
        corral.store,
        corral.tenant,
        "name: spend\nbudgets:\n  - {name: ten-calls, scope: run, metric: tool_calls, limit: 10}\n",
        source="spend.yaml",
        actor="human:test",
        now=corral.clock.now(),
    )
    calls = [Call("lookup_order", {"order_id": f"A-{n}"}) for n in range(50)]
    agent = Agent(
        "reader",
        model=ScriptedModel([reply("", *calls), "done"]),
        tools=[lookup_order],
        scopes=["orders:read"],
    )
    run_id = await start(corral, agent)
    assert len(executed) == 10
    error = await run_error(corral, run_id)
    assert error["code"] == "budget_exceeded"
    kinds = await audit_kinds(corral)
    assert kinds.count("budget.exceeded") == 40


async def test_concurrent_decisions_on_one_gate_have_one_winner(corral: Corral) -> None:
    await apply(corral)
    await add_approver(corral, "sam", "finance")
    agent = Agent(
        "refunds", model=refund_script(90000), tools=[issue_refund], scopes=["payments:refund"]
    )
    run_id = await start(corral, agent)
    (pending,) = await corral.store.read_script(
        lambda d: approvals.list_approvals(corral.tenant, status="pending")
    )
    outcomes = await asyncio.gather(
        *(
            approvals.decide(
                corral, pending.approval_id, approve=n % 2 == 0, principal="sam", reason=f"#{n}"
            )
            for n in range(50)
        ),
        return_exceptions=True,
    )
    winners = [o for o in outcomes if isinstance(o, approvals.ApprovalDecision)]
    assert len(winners) == 1
    assert all(isinstance(o, approvals.AlreadyDecided) for o in outcomes if o not in winners)
    await corral.run_until_idle()
    assert (await corral.get_run(run_id)).status == "succeeded"
    assert len(executed) == (1 if winners[0].approved else 0)


async def test_an_exhausted_budget_can_ask_a_human(corral: Corral) -> None:
    await apply_policy(
        corral.store,
        corral.tenant,
        "name: spend\nbudgets:\n"
        "  - name: one-lookup\n    scope: run\n    metric: tool_calls\n    limit: 1\n"
        "    on_exceed: require_approval\n    approval: {approvers: [ops]}\n",
        source="spend.yaml",
        actor="human:test",
        now=corral.clock.now(),
    )
    await add_approver(corral, "olu", "ops")
    agent = Agent(
        "reader",
        model=ScriptedModel(
            [
                reply("", Call("lookup_order", {"order_id": "A-1"})),
                reply("", Call("lookup_order", {"order_id": "A-2"})),
                "done",
            ]
        ),
        tools=[lookup_order],
        scopes=["orders:read"],
    )
    run_id = await start(corral, agent)
    assert executed == [("lookup_order", {"order_id": "A-1"})]
    (pending,) = await corral.store.read_script(
        lambda d: approvals.list_approvals(corral.tenant, status="pending")
    )
    assert pending.rule == "budget:one-lookup"
    await approvals.decide(corral, pending.approval_id, approve=True, principal="olu", reason="ok")
    await corral.run_until_idle()
    assert (await corral.get_run(run_id)).status == "succeeded"
    assert [name for name, _ in executed] == ["lookup_order", "lookup_order"]


async def test_a_tool_can_ask_for_review_and_runs_once_approved(corral: Corral) -> None:
    await add_approver(corral, "rae", "quality")
    seen: list[str | None] = []

    @tool
    async def send_reply(text: str, ctx: ToolContext) -> str:
        """Send a reply to the customer."""
        seen.append(ctx.approved_by)
        if ctx.approved_by is None and "refund" in text:
            raise ApprovalRequired("mentions a refund: a person checks it", approvers=["quality"])
        return "sent"

    agent = Agent(
        "replier",
        model=ScriptedModel(
            [reply("", Call("send_reply", {"text": "your refund is on its way"})), "ok"]
        ),
        tools=[send_reply],
    )
    run_id = await start(corral, agent)
    assert (await corral.get_run(run_id)).status == "waiting"
    (pending,) = await corral.store.read_script(
        lambda d: approvals.list_approvals(corral.tenant, status="pending")
    )
    assert pending.rule == "review"
    assert pending.reason == "mentions a refund: a person checks it"
    await approvals.decide(corral, pending.approval_id, approve=True, principal="rae", reason="ok")
    await corral.run_until_idle()
    assert (await corral.get_run(run_id)).status == "succeeded"
    assert seen == [None, "rae"]


class Answer(BaseModel):
    text: str
    confidence: float


async def test_an_unsure_agent_output_waits_for_a_reviewer(corral: Corral) -> None:
    await add_approver(corral, "rae", "quality")
    agent: Agent[Answer] = Agent(
        "answerer",
        model=ScriptedModel(
            [
                '{"text": "maybe 42", "confidence": 0.3}',
                '{"text": "surely 42", "confidence": 0.4}',
            ]
        ),
        output_type=Answer,
        review=lambda a: "confidence below 0.5" if a.confidence < 0.5 else None,
        reviewers=["quality"],
    )

    @corral.workflow
    async def ask(ctx: RunContext, question: str) -> Answer:
        return (await agent.run(ctx, question)).output

    handle = await corral.start(ask, "what is six times seven?")
    await corral.run_until_idle()

    async def pending() -> approvals.ApprovalRequest:
        (found,) = await corral.store.read_script(
            lambda d: approvals.list_approvals(corral.tenant, status="pending")
        )
        return found

    first = await pending()
    assert first.arguments == {"output": {"text": "maybe 42", "confidence": 0.3}}
    await approvals.decide(
        corral, first.approval_id, approve=False, principal="rae", reason="vague"
    )
    await corral.run_until_idle()
    second = await pending()
    await approvals.decide(
        corral,
        second.approval_id,
        approve=True,
        principal="rae",
        reason="fixed the wording",
        edited_arguments={"output": {"text": "42", "confidence": 1.0}},
    )
    await corral.run_until_idle()
    assert await handle.wait_for_result() == Answer(text="42", confidence=1.0)
    names = [name for name, _ in await steps_of(corral, handle.run_id)]
    assert names.count("review:answerer") == 2


def token_budget(on_exceed: str) -> str:
    extra = "\n    degrade_to: scripted" if on_exceed == "degrade" else ""
    return (
        "name: tokens\nbudgets:\n  - name: tiny\n    scope: run\n    metric: tokens\n"
        f"    limit: 10\n    on_exceed: {on_exceed}{extra}\n"
    )


async def test_a_model_budget_can_degrade_to_a_cheaper_model(corral: Corral) -> None:
    await apply_policy(
        corral.store, corral.tenant, token_budget("degrade"), source="t.yaml", actor="t", now=0.0
    )
    agent = Agent("thinker", model=ScriptedModel(["the expensive answer"]))
    run_id = await start(corral, agent, "think")
    run = await corral.get_run(run_id)
    assert run.status == "succeeded", run.error
    record = json.loads((await corral.journal(run_id))[0].result or "")
    assert record["model"] == "scripted:default"  # the budget's degrade_to answered
    assert json.loads(run.result or "").startswith("[scripted model]")


async def test_a_model_budget_that_stops_fails_the_run_naming_it(corral: Corral) -> None:
    await apply_policy(
        corral.store, corral.tenant, token_budget("stop"), source="t.yaml", actor="t", now=0.0
    )
    run_id = await start(corral, Agent("thinker", model=ScriptedModel(["never said"])), "think")
    error = await run_error(corral, run_id)
    assert error["code"] == "budget_exceeded"
    assert "'tiny'" in error["message"]
    assert await steps_of(corral, run_id) == [("model:thinker", "failed")]


async def test_an_escalation_gets_its_own_deadline(corral: Corral) -> None:
    spec = ApprovalSpec(
        approvers=("finance",),
        deadline=3600,
        on_deadline="escalate",
        escalate_to=("leads",),
        escalation_deadline=60,
    )
    request = await corral.store.run_script(
        lambda d: approvals.request_approval(
            tenant=corral.tenant,
            run_id="r-1",
            step_seq=3,
            agent="refunds",
            tool="issue_refund",
            arguments={"amount_cents": 1},
            parameters={"type": "object"},
            reason="r",
            policy=None,
            policy_version=None,
            rule=None,
            spec=spec,
            now=1000.0,
            dialect=d,
        )
    )
    assert request.escalation_deadline == 60
    outcome = await corral.store.run_script(
        lambda d: approvals.deadline_passed(request.approval_id, now=4700.0, dialect=d)
    )
    assert outcome.decision is None
    assert outcome.escalated_until == 4760.0  # the escalation's 60 s, not the first hour
