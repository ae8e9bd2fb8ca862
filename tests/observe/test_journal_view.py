"""The journal as observability reads it: an agent run's steps classified and decoded."""

from __future__ import annotations

from corral import Corral
from corral.agents import Agent
from corral.models import Call, ScriptedModel, reply
from corral.observe import load_run_view
from corral.tools import tool


@tool
def lookup_order(order_id: str) -> dict[str, str]:
    """Find an order."""
    return {"order_id": order_id, "status": "shipped"}


async def test_an_agent_run_reads_as_model_and_tool_steps(corral: Corral) -> None:
    model = ScriptedModel([reply("", Call("lookup_order", {"order_id": "A-1"})), "Shipped."])
    helper = Agent("helper", model=ScriptedModel(["checked"]))
    agent = Agent("support", model=model, tools=[lookup_order], delegates=[helper])
    handle = await corral.start(agent, "Where is A-1?")
    await corral.run_until_idle()
    view = await load_run_view(corral.store, handle.run_id)
    assert view is not None
    model_step, tool_step, final = view.steps
    assert (model_step.category, model_step.agent, model_step.model) == (
        "model",
        "support",
        "scripted:script",
    )
    assert model_step.usage is not None
    assert model_step.usage.total_tokens > 0
    assert model_step.cost_usd == 0.0  # the scripted model is free
    assert model_step.message is not None
    assert model_step.message["tool_calls"][0]["name"] == "lookup_order"
    assert (tool_step.category, tool_step.tool) == ("tool", "lookup_order")
    assert tool_step.call is not None
    assert tool_step.call["arguments"] == {"order_id": "A-1"}
    assert tool_step.tool_value == {"order_id": "A-1", "status": "shipped"}
    assert tool_step.decision is not None
    assert tool_step.decision["effect"] == "allow"
    assert final.message is not None
    assert final.message["content"] == "Shipped."
    assert view.walk() == [view]
