"""Agent benchmarks on SQLite: the cost of a tool call in the tool loop, and of governing it.

An agent on the scripted model makes `calls` tool calls one turn at a time (a model step, then a
tool step, each journaled). Measured three ways: no policy; a policy with rules that do not match
the call (CEL conditions on other tools; every call reads the policies); that policy with
budgets (every model and tool call also reads the budget spent, reserves and settles); and a
rule that matches every call (every call writes an audit entry with its outcome).
"""

from __future__ import annotations

import tempfile
import time
from typing import Any

from bench.engine_bench import Row
from corral import Corral
from corral.agents import Agent
from corral.governance.policy_store import apply_policy
from corral.models import Call, ModelRequest, ScriptedModel, reply
from corral.models.scripted import Turn
from corral.tools import tool

RULES = """
name: guardrails
rules:
  - name: large-refunds-need-approval
    match: {tools: [issue_refund]}
    when: args.amount_cents > 50000
    effect: require_approval
    approval: {approvers: [finance], deadline: 4h}
  - name: no-deletes
    match: {tools: ["delete_*"]}
    effect: deny
    reason: agents never delete
"""
BUDGETS = """
budgets:
  - {name: per-run-spend, scope: run, metric: usd, limit: 100.0, soft_limit: 90.0}
  - {name: per-run-tool-calls, scope: run, metric: tool_calls, limit: 100000}
  - {name: tenant-tokens, scope: tenant, metric: tokens, limit: 1000000000}
"""

AUDITED = """
name: audited
rules:
  - name: reads-are-recorded
    match: {tools: [lookup_order]}
    when: args.order_id.startsWith("A-")
    effect: allow
    reason: every lookup is recorded
"""


@tool(scopes=["orders:read"])
def lookup_order(order_id: str) -> str:
    """Look an order up."""
    return "shipped"


def one_call_per_turn(calls: int) -> ScriptedModel:
    def rules(request: ModelRequest) -> Turn:
        made = sum(1 for m in request.messages if m.role == "tool")
        if made < calls:
            return reply("", Call("lookup_order", {"order_id": f"A-{made}"}))
        return reply("done")

    return ScriptedModel(rules=rules)


async def per_tool_call(url: str, *, calls: int, policy: str | None) -> float:
    """Microseconds per turn (a model step and a governed tool step)."""
    agent: Agent[Any] = Agent(
        "reader",
        model=one_call_per_turn(calls),
        tools=[lookup_order],
        scopes=["orders:read"],
        max_turns=calls + 1,
    )
    async with Corral(url) as corral:
        if policy is not None:
            await apply_policy(
                corral.store, corral.tenant, policy, source="bench", actor="bench", now=0.0
            )
        handle = await corral.start(agent, "go")
        started = time.perf_counter()
        await corral.run_until_idle()
        elapsed = time.perf_counter() - started
        run = await corral.get_run(handle.run_id)
        assert run.status == "succeeded", run.error
    return elapsed / calls * 1e6


async def run_all(*, quick: bool = False) -> list[Row]:
    calls = 30 if quick else 100
    rows = []
    with tempfile.TemporaryDirectory() as folder:
        base = await per_tool_call(f"sqlite:///{folder}/none.db", calls=calls, policy=None)
        rows.append(
            Row("agent: model step + tool step, no policy", base, "µs/turn", f"{calls} turns")
        )
        variants = (
            ("rules that do not match", RULES),
            ("those rules and three budgets", RULES + BUDGETS),
            ("a rule that matches (audited)", AUDITED),
        )
        for name, policy in variants:
            cost = await per_tool_call(
                f"sqlite:///{folder}/{len(rows)}.db", calls=calls, policy=policy
            )
            rows.append(
                Row(
                    f"agent: the same under {name}",
                    cost,
                    "µs/turn",
                    f"governance adds {cost - base:,.0f} µs ({cost / base:.2f}×)",
                )
            )
    return rows
