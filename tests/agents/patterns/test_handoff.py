"""Handoffs: the conversation passes from agent to agent inside one run, journaled as it goes."""

from __future__ import annotations

import json
from typing import Any

from corral import Corral
from corral.agents import Agent
from corral.models import Call, ModelRequest, ScriptedModel, reply
from corral.tools import tool

from .harness import steps_of


@tool
async def issue_refund(order_id: str, cents: int) -> dict[str, Any]:
    """Refund an order.

    Args:
        order_id: Like A-1001.
        cents: How much to refund.
    """
    return {"order_id": order_id, "refunded_cents": cents}


def refunds_rules(request: ModelRequest) -> Any:
    if not any(m.role == "tool" and "refunded_cents" in m.content for m in request.messages):
        return reply("", Call("issue_refund", {"order_id": "A-1", "cents": 4200}))
    return "Refunded 42.00 on A-1."


def make_agents() -> tuple[Agent[Any], Agent[Any], Agent[Any]]:
    refunds = Agent(
        "refunds",
        description="issues refunds",
        model=ScriptedModel(rules=refunds_rules),
        tools=[issue_refund],
    )
    billing = Agent(
        "billing",
        description="invoices and payments",
        model=ScriptedModel({"billing": [reply("", Call("transfer_to_refunds"))]}),
        handoffs=[refunds],
    )
    front = Agent(
        "front",
        model=ScriptedModel({"front": [reply("", Call("transfer_to_billing"))]}),
        handoffs=[billing],
    )
    return front, billing, refunds


async def test_a_chain_of_handoffs_ends_with_the_last_agent_answering(corral: Corral) -> None:
    front, _, _ = make_agents()
    handle = await corral.start(front, "I was charged twice for A-1")
    await corral.run_until_idle()
    assert await handle.wait_for_result() == "Refunded 42.00 on A-1."
    assert await steps_of(corral, handle.run_id) == [
        ("model:front", "succeeded"),
        ("handoff:billing", "succeeded"),
        ("model:billing", "succeeded"),
        ("handoff:refunds", "succeeded"),
        ("model:refunds", "succeeded"),
        ("tool:issue_refund", "succeeded"),
        ("model:refunds", "succeeded"),
    ]
    journal = await corral.journal(handle.run_id)
    assert json.loads(journal[1].result or "") == "billing"
    assert await corral.list_runs(parent_run_id=handle.run_id) == []  # all in one run


async def test_a_handoff_to_an_agent_not_listed_goes_back_to_the_model(corral: Corral) -> None:
    front = Agent(
        "front",
        model=ScriptedModel([reply("", Call("transfer_to_legal")), "I cannot transfer you."]),
        handoffs=[Agent("billing", model=ScriptedModel([]))],
    )
    handle = await corral.start(front, "sue them")
    await corral.run_until_idle()
    assert await handle.wait_for_result() == "I cannot transfer you."
    assert await steps_of(corral, handle.run_id) == [
        ("model:front", "succeeded"),
        ("tool:transfer_to_legal", "failed"),
        ("model:front", "succeeded"),
    ]
