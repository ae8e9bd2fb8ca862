"""Workflows the API tests start: a greeting, one that waits for a signal, and a support agent
(a priced scripted model, a tool, a delegate) whose runs have traces, costs and summaries."""

from __future__ import annotations

from typing import Any

from corral import RunContext, workflow
from corral.agents import Agent
from corral.models import Call, ModelRequest, ModelResponse, ScriptedModel, reply
from corral.models.messages import Usage
from corral.models.model import Model
from corral.models.scripted import Turn
from corral.tools import tool


@workflow
async def greet(ctx: RunContext, name: str) -> str:
    return f"hello {name}"


@workflow
async def wait_for_go(ctx: RunContext, order: str) -> Any:
    """Waits for the signal `go` and returns what it carried."""
    data = await ctx.wait_for_signal("go")
    return {"order": order, "go": data}


WORKFLOWS = [greet, wait_for_go]


# -- an agent with a priced model and a delegate (observe, costs, search; H1's tests) ------------

PRICED = "openai:gpt-4o-mini"
"""The model the support agent reports: priced by genai-prices (1,000 in / 500 out a call)."""


class PricedModel(Model):
    """A scripted model reporting `PRICED` and 1,000 input / 500 output tokens per call."""

    def __init__(self, script: ScriptedModel) -> None:
        self.name = PRICED
        self._script = script

    async def complete(self, request: ModelRequest) -> ModelResponse:
        response = await self._script.complete(request)
        usage = Usage(input_tokens=1000, output_tokens=500)
        return response.model_copy(update={"model": self.name, "usage": usage})


@tool
async def lookup_order(order_id: str) -> dict[str, str]:
    """Find an order by its id."""
    return {"order_id": order_id, "status": "late" if order_id.endswith("1") else "shipped"}


def _billing_rules(request: ModelRequest) -> str:
    return f"billing: no refund is due for {request.messages[-1].content}"


billing = Agent(
    "billing", model=PricedModel(ScriptedModel(rules=_billing_rules)), description="Billing."
)


def _support_rules(request: ModelRequest) -> Turn | str:
    """Look the order up (its id is the input's last word), ask billing, then answer."""
    results = [m.content for m in request.messages if m.role == "tool"]
    asked = str(request.messages[0].content)
    if not results:
        return reply("Checking the order.", Call("lookup_order", {"order_id": asked.split()[-1]}))
    if len(results) == 1:
        return reply("", Call("ask_billing", {"task": asked}))
    return "Answer: " + " / ".join(str(result) for result in results)


support = Agent(
    "support",
    model=PricedModel(ScriptedModel(rules=_support_rules)),
    tools=[lookup_order],
    delegates=[billing],
    description="Answers customers about their orders.",
)

WORKFLOWS += list(support.__corral_workflows__())
