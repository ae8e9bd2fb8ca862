"""Run summaries: the same plain-language account from the same journal, for demo-like flows."""

from __future__ import annotations

import json
from typing import Any

from typer.testing import CliRunner

from corral import Corral
from corral.agents import Agent
from corral.governance import approvals
from corral.governance.policy_store import apply_policy
from corral.models import Call, ModelRequest, ScriptedModel, reply
from corral.models.scripted import Turn
from corral.observe import RunView, load_run_view
from corral.observe.summaries import summarize, summary_json, summary_of
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
  - name: never-refund-test-orders
    match: {tools: [issue_refund]}
    when: args.order_id.startsWith("TEST-")
    effect: deny
    reason: Test orders are never refunded.
"""


@tool
def lookup_order(order_id: str) -> dict[str, str]:
    """Find an order."""
    if order_id == "BROKEN":
        raise RuntimeError("the order database is down")
    return {"order_id": order_id, "status": "delivered damaged"}


@tool(scopes=["payments:refund"])
def issue_refund(order_id: str, amount_cents: int) -> str:
    """Refund an order."""
    return f"refunded {amount_cents} cents on {order_id}"


def priced(rules: Any) -> ScriptedModel:
    """A scripted model that answers as a priced one, so its calls cost something."""
    model = ScriptedModel(rules=rules)
    model.name = "openai:gpt-4o-mini"
    return model


def has_results(request: ModelRequest) -> bool:
    return any(m.role == "tool" for m in request.messages)


def refunder_rules(request: ModelRequest) -> Turn | str:
    if not has_results(request):
        return reply(
            "The parcel arrived damaged, so the customer is owed a full refund.",
            Call("issue_refund", {"order_id": "A-1", "amount_cents": 90000}),
        )
    return "Refund issued."


def boss_rules(request: ModelRequest) -> Turn | str:
    if not has_results(request):
        return reply(
            "Refunds are the refunder's job.",
            Call("ask_refunder", {"task": "Refund order A-1 (arrived damaged)"}),
        )
    return "The customer has been refunded."


refunder = Agent(
    "refunder", model=priced(refunder_rules), tools=[issue_refund], scopes=["payments:refund"]
)
boss = Agent("boss", model=priced(boss_rules), delegates=[refunder], scopes=["payments:*"])


async def setup(corral: Corral) -> None:
    await apply_policy(corral.store, corral.tenant, POLICY, source="p", actor="human:t", now=0.0)
    await add_approver(corral, "sam", "finance")


async def approve_all(corral: Corral, **edit: Any) -> None:
    for request in await corral.store.read_script(
        lambda d: approvals.list_approvals(corral.tenant, status="pending")
    ):
        edited = {**request.arguments, **edit} if edit else None
        await approvals.decide(
            corral,
            request.approval_id,
            approve=True,
            principal="sam",
            reason="photo of the damage checked",
            edited_arguments=edited,
        )
    await corral.run_until_idle()


async def view_of(corral: Corral, run_id: str) -> RunView:
    view = await load_run_view(corral.store, run_id)
    assert view is not None
    return view


async def test_an_approved_delegated_refund_reads_as_a_story(corral: Corral) -> None:
    await setup(corral)
    handle = await corral.start(boss, "My order A-1 arrived damaged, please refund it.")
    await corral.run_until_idle()
    await approve_all(corral, amount_cents=80000)
    view = await view_of(corral, handle.run_id)
    assert view.run.status == "succeeded", view.run.error
    summary = await summarize(corral.store, view)
    (child,) = view.children.values()
    costs = [s.cost_usd for run in view.walk() for s in run.steps if s.category == "model"]
    assert all(c is not None and c > 0 for c in costs)
    assert summary.cost_usd == sum(c for c in costs if c is not None)
    assert summary.unpriced_calls == 0
    assert summary.runs == [view.run_id, child.run_id]
    expected = f"""\
Run {view.run_id} (agent:boss): succeeded

What was asked
  "My order A-1 arrived damaged, please refund it."

Who worked on it
  - boss (2 model calls)
  - refunder (2 model calls), on a task delegated by boss: "Refund order A-1 (arrived damaged)" \
(run {child.run_id})

What they decided, and why
  - boss said "Refunds are the refunder's job." and asked refunder to: "Refund order A-1 \
(arrived damaged)".
  - refunder said "The parcel arrived damaged, so the customer is owed a full refund." and \
called issue_refund (amount_cents 90000, order_id "A-1").
  - policy refunds v1 (rule large-refunds-need-approval) required a human's approval before \
issue_refund (amount_cents 90000, order_id "A-1") could run: Refunds over $500 are checked by \
finance.
  - refunder concluded: "Refund issued."

What the tools changed
  - issue_refund was called with amount_cents 80000, order_id "A-1" (after approval) and \
returned "refunded 80000 cents on A-1"

Who approved what
  - sam approved refunder's call to issue_refund (amount_cents 90000, order_id "A-1") on \
2023-11-14 at 22:13 UTC, changing the arguments to amount_cents 80000, order_id "A-1": "photo of \
the damage checked"

What it cost
  ${summary.cost_usd:.4f} for 4 model call(s) ({summary.tokens:,} tokens) in 2 runs (1 delegated).

How it ended
  It succeeded. The final answer: "The customer has been refunded."
"""
    assert summary.text == expected
    assert summary.polished is None
    # The same journal, the same account.
    assert (await summarize(corral.store, await view_of(corral, handle.run_id))).text == expected


async def test_a_failed_run_says_what_went_wrong_in_words(corral: Corral) -> None:
    await setup(corral)

    def rules(request: ModelRequest) -> Turn | str:
        return reply(
            "",
            Call("lookup_order", {"order_id": "BROKEN"}),
            Call("issue_refund", {"order_id": "TEST-7", "amount_cents": 100}),
        )

    agent = Agent(
        "clerk",
        model=ScriptedModel(rules=rules),
        tools=[lookup_order, issue_refund],
        scopes=["payments:refund"],
        max_turns=1,
        retry=None,
    )
    handle = await corral.start(agent, "Refund TEST-7")
    await corral.run_until_idle()
    summary = summary_of(await view_of(corral, handle.run_id))
    assert summary.status == "failed"
    assert summary.decisions == [
        'clerk called lookup_order (order_id "BROKEN"); called issue_refund (amount_cents 100, '
        'order_id "TEST-7") (without stating a reason).',
        "issue_refund was not called: the call to 'issue_refund' was denied by policy refunds "
        "v1, rule never-refund-test-orders: Test orders are never refunded.",
        f"clerk was stopped: agent 'clerk' made 1 model calls (max_turns=1) without a final "
        f"answer in run {handle.run_id} (turn_limit)",
    ]
    (failed_tool,) = summary.tools
    assert failed_tool.startswith('lookup_order was called with order_id "BROKEN" and failed: ')
    assert "the order database is down" in failed_tool
    assert summary.outcome == (
        f"It failed: agent 'clerk' made 1 model calls (max_turns=1) without a final answer in "
        f"run {handle.run_id} (turn_limit)"
    )
    assert summary.approvals == []
    assert "  - No approval was needed." in summary.text


async def test_a_waiting_run_names_the_decision_it_waits_for(corral: Corral) -> None:
    await setup(corral)
    refunds = Agent(
        "refunds",
        model=ScriptedModel(rules=refunder_rules),
        tools=[issue_refund],
        scopes=["payments:refund"],
    )
    handle = await corral.start(refunds, "Refund A-1")
    await corral.run_until_idle()
    summary = await summarize(corral.store, await view_of(corral, handle.run_id))
    assert summary.approvals == [
        'refunds\'s call to issue_refund (amount_cents 90000, order_id "A-1") is waiting for a '
        "decision by finance"
    ]
    assert summary.tools == []
    assert summary.outcome == (
        "It has not finished: it is waiting for a decision on issue_refund by finance."
    )
    assert summary.cost == "$0.0000 for 1 model call(s) (" + f"{summary.tokens:,} tokens)."


async def test_a_model_may_polish_the_text_which_is_kept(corral: Corral) -> None:
    seen: list[ModelRequest] = []

    def rewrite(request: ModelRequest) -> str:
        seen.append(request)
        return "In short: the customer asked where A-1 is, and got an answer."

    model = ScriptedModel([reply("", Call("lookup_order", {"order_id": "A-1"})), "Delivered."])
    handle = await corral.start(Agent("support", model=model, tools=[lookup_order]), "A-1?")
    await corral.run_until_idle()
    view = await view_of(corral, handle.run_id)
    plain = summary_of(view)
    polished = await summarize(corral.store, view, polish=ScriptedModel(rules=rewrite, name="pen"))
    assert polished.text == plain.text
    assert polished.polished == "In short: the customer asked where A-1 is, and got an answer."
    assert polished.polished_by == "scripted:pen"
    (request,) = seen
    assert [m.content for m in request.messages] == [plain.text]
    assert summary_json(polished)["polished"] == polished.polished


def test_runs_summary_on_the_command_line(db_url: str) -> None:
    async def build(corral: Corral) -> str:
        model = ScriptedModel([reply("", Call("lookup_order", {"order_id": "A-1"})), "Delivered."])
        handle = await corral.start(Agent("support", model=model, tools=[lookup_order]), "A-1?")
        await corral.run_until_idle()
        return handle.run_id

    run_id = prepared(db_url, build)
    runner = CliRunner()
    text = invoke(runner, db_url, "runs", "summary", run_id)
    assert text.exit_code == 0, text.stderr
    assert text.stdout.startswith(f"Run {run_id} (agent:support): succeeded\n")
    assert 'It succeeded. The final answer: "Delivered."' in text.stdout
    data = json.loads(invoke(runner, db_url, "runs", "summary", run_id, "--json").stdout)
    assert data["tools"] == [
        'lookup_order was called with order_id "A-1" and returned order_id "A-1", '
        'status "delivered damaged"'
    ]
    assert data["cost"]["usd"] == 0.0
    polished = invoke(runner, db_url, "runs", "summary", run_id, "--polish", "scripted")
    assert polished.exit_code == 0, polished.stderr
    assert "As rewritten by scripted:default:" in polished.stdout
