"""Run divergence: the first step where two runs of one workflow differ, or that they do not."""

from __future__ import annotations

import json
from typing import Any

import pytest
from typer.testing import CliRunner

from corral import Corral, RunContext, UsageError
from corral.agents import Agent
from corral.governance import approvals
from corral.governance.policy_store import apply_policy
from corral.models import Call, ModelRequest, ScriptedModel, reply
from corral.models.scripted import Turn
from corral.observe import RunView, load_run_view
from corral.observe.compare import compare_runs, divergence_json, render_divergence
from corral.tools import tool

from .harness import POLICY, add_approver, invoke, prepared

stock = {"A-1": "delivered"}


@tool
def lookup_order(order_id: str) -> dict[str, str]:
    """Find an order."""
    return {"order_id": order_id, "status": stock.get(order_id, "unknown")}


@tool(scopes=["payments:refund"])
def issue_refund(order_id: str, amount_cents: int) -> str:
    """Refund an order."""
    return f"refunded {amount_cents} on {order_id}"


def support_rules(request: ModelRequest) -> Turn | str:
    """Look up the order named in the question, then answer with what the tool said."""
    results = [m.content for m in request.messages if m.role == "tool"]
    if not results:
        order = request.messages[-1].content.split()[-1]
        return reply("Looking it up.", Call("lookup_order", {"order_id": order}))
    return f"Status: {json.loads(results[-1])['status']}"


support = Agent("support", model=ScriptedModel(rules=support_rules), tools=[lookup_order])


async def run_view(corral: Corral, target: Any, text: Any) -> RunView:
    handle = await corral.start(target, text)
    await corral.run_until_idle()
    view = await load_run_view(corral.store, handle.run_id)
    assert view is not None
    return view


@pytest.fixture(autouse=True)
def _stock() -> None:
    stock.clear()
    stock["A-1"] = "delivered"


async def test_two_runs_of_the_same_work_are_identical(corral: Corral) -> None:
    first = await run_view(corral, support, "Where is A-1")
    second = await run_view(corral, support, "Where is A-1")
    divergence = compare_runs(first, second)
    assert divergence.identical
    assert divergence.steps_compared == 3
    assert "are identical: 3 steps" in render_divergence(divergence)


async def test_approvals_and_their_generated_ids_do_not_make_runs_differ(
    corral: Corral,
) -> None:
    await apply_policy(corral.store, corral.tenant, POLICY, source="p", actor="human:t", now=0.0)
    await add_approver(corral, "sam", "finance")
    model = ScriptedModel(
        rules=lambda r: (
            "done"
            if any(m.role == "tool" for m in r.messages)
            else reply("", Call("issue_refund", {"order_id": "A-1", "amount_cents": 90000}))
        )
    )
    agent = Agent("refunds", model=model, tools=[issue_refund], scopes=["payments:refund"])
    handles = [await corral.start(agent, "refund A-1") for _ in range(2)]
    await corral.run_until_idle()
    for request in await corral.store.read_script(
        lambda d: approvals.list_approvals(corral.tenant, status="pending")
    ):
        await approvals.decide(
            corral, request.approval_id, approve=True, principal="sam", reason="ok"
        )
    await corral.run_until_idle()
    first, second = [await load_run_view(corral.store, h.run_id) for h in handles]
    assert first is not None
    assert second is not None
    assert first.run.status == second.run.status == "succeeded"
    assert compare_runs(first, second).identical


async def test_different_arguments_are_the_divergence_with_both_sides(corral: Corral) -> None:
    first = await run_view(corral, support, "Where is A-1")
    second = await run_view(corral, support, "Where is A-2")
    divergence = compare_runs(first, second)
    # The model's answers differ first (they name different orders), at step 1.
    assert (divergence.aspect, divergence.position, divergence.steps_compared) == ("result", 1, 0)
    assert divergence.a is not None
    assert divergence.b is not None
    assert divergence.a.result["tool_calls"] == [
        {"name": "lookup_order", "arguments": {"order_id": "A-1"}}
    ]
    assert divergence.b.result["tool_calls"] == [
        {"name": "lookup_order", "arguments": {"order_id": "A-2"}}
    ]
    text = render_divergence(divergence)
    assert "first differ at step 1: a different result" in text
    assert '"order_id": "A-2"' in text


async def test_the_same_call_with_a_different_result_diverges_at_the_tool(
    corral: Corral,
) -> None:
    first = await run_view(corral, support, "Where is A-1")
    stock["A-1"] = "lost"
    second = await run_view(corral, support, "Where is A-1")
    divergence = compare_runs(first, second)
    assert (divergence.aspect, divergence.position) == ("result", 2)
    assert divergence.a is not None
    assert divergence.b is not None
    assert (divergence.a.name, divergence.a.result["value"]["status"]) == (
        "tool:lookup_order",
        "delivered",
    )
    assert divergence.b.result["value"]["status"] == "lost"
    data = divergence_json(divergence)
    assert (data["identical"], data["aspect"], data["position"]) == (False, "result", 2)
    assert data["b"]["arguments"] == {"arguments": {"order_id": "A-1"}}


async def test_different_steps_and_a_shorter_journal(corral: Corral) -> None:
    async def check(order: str) -> str:
        return order

    @corral.workflow(name="branching")
    async def branching(ctx: RunContext, order: str) -> str:
        await ctx.step(check, order, name="check", record={"order": order})
        if order == "A-1":
            await ctx.step(check, order, name="ship")
            await ctx.step(check, order, name="notify")
        else:
            await ctx.step(check, order, name="hold")
        return "ok"

    a1 = await run_view(corral, branching, "A-1")
    a2 = await run_view(corral, branching, "A-2")
    named = compare_runs(a1, a2)
    assert (named.aspect, named.position) == ("arguments", 1)  # `check` got another order
    a1_again = await run_view(corral, branching, "A-1")
    assert compare_runs(a1, a1_again).identical

    @corral.workflow(name="counting")
    async def counting(ctx: RunContext, n: int) -> int:
        for i in range(n):
            await ctx.step(check, "x", name=f"step-{i}")
        return 0

    short, long = await run_view(corral, counting, 1), await run_view(corral, counting, 2)
    missing = compare_runs(short, long)
    assert (missing.aspect, missing.position, missing.steps_compared) == ("missing", 2, 1)
    assert missing.a is None
    assert missing.b is not None
    assert missing.b.name == "step-1"
    assert "A: no step 2" in render_divergence(missing)

    @corral.workflow(name="naming")
    async def naming(ctx: RunContext, kind: str) -> str:
        await ctx.step(check, "x", name=kind)
        return kind

    renamed = compare_runs(await run_view(corral, naming, "a"), await run_view(corral, naming, "b"))
    assert (renamed.aspect, renamed.position) == ("step", 1)


async def test_a_divergence_inside_delegated_runs_is_followed(corral: Corral) -> None:
    def boss_rules(request: ModelRequest) -> Turn | str:
        if any(m.role == "tool" for m in request.messages):
            return "reported"
        order = request.messages[-1].content.split()[-1]
        return reply("", Call("ask_support", {"task": f"Where is {order}"}))

    boss = Agent("boss", model=ScriptedModel(rules=boss_rules), delegates=[support])
    first = await run_view(corral, boss, "Check A-1")
    stock["A-1"] = "lost"
    second = await run_view(corral, boss, "Check A-1")
    divergence = compare_runs(first, second)
    assert divergence.a is not None
    assert (divergence.aspect, divergence.a.kind) == ("result", "child.result")
    assert divergence.inner is not None
    assert (divergence.inner.aspect, divergence.inner.position) == ("result", 2)
    assert divergence.inner.workflow == "agent:support"
    assert "inside the child runs:" in render_divergence(divergence)


async def test_runs_of_different_workflows_cannot_be_compared(corral: Corral) -> None:
    other = Agent("other", model=ScriptedModel(["hi"]))
    first = await run_view(corral, support, "Where is A-1")
    second = await run_view(corral, other, "hello")
    with pytest.raises(UsageError, match="different workflows"):
        compare_runs(first, second)


def test_runs_compare_on_the_command_line(db_url: str) -> None:
    async def build(corral: Corral) -> list[str]:
        ids = []
        for text in ("Where is A-1", "Where is A-1", "Where is A-9"):
            ids.append((await corral.start(support, text)).run_id)
        other = await corral.start(Agent("other", model=ScriptedModel(["hi"])), "hello")
        await corral.run_until_idle()
        return [*ids, other.run_id]

    same_a, same_b, different, other = prepared(db_url, build)
    runner = CliRunner()
    identical = invoke(runner, db_url, "runs", "compare", same_a, same_b)
    assert identical.exit_code == 0, identical.stderr
    assert "are identical" in identical.stdout
    data = json.loads(invoke(runner, db_url, "runs", "compare", same_a, different, "--json").stdout)
    assert (data["identical"], data["aspect"], data["position"]) == (False, "result", 1)
    refused = invoke(runner, db_url, "runs", "compare", same_a, other)
    assert refused.exit_code == 2
    assert "different workflows" in refused.stderr
