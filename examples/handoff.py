"""Handoffs: the front desk passes the conversation to billing, billing to refunds, and refunds
answers after calling a tool. One run; each handoff is a journaled step.

    python examples/handoff.py
"""

from __future__ import annotations

import asyncio
import tempfile
from pathlib import Path
from typing import Any

from corral import Corral, RunContext, workflow
from corral.agents import Agent
from corral.models import Call, ModelRequest, ScriptedModel, reply
from corral.tools import tool


@tool
async def issue_refund(order_id: str, cents: int) -> dict[str, Any]:
    """Refund (part of) an order.

    Args:
        order_id: Like A-1001.
        cents: How much to refund.
    """
    return {"order_id": order_id, "refunded_cents": cents, "status": "refunded"}


def refunds_rules(request: ModelRequest) -> Any:
    done = [m.content for m in request.messages if m.role == "tool" and "refunded" in m.content]
    if not done:
        return reply("", Call("issue_refund", {"order_id": "A-1001", "cents": 1999}))
    return "I've refunded the duplicate charge of 19.99 on A-1001; it shows in 3-5 days."


refunds = Agent(
    "refunds",
    instructions="You issue refunds.",
    description="issues refunds for orders",
    model=ScriptedModel(rules=refunds_rules),
    tools=[issue_refund],
)
billing = Agent(
    "billing",
    instructions="You answer billing questions; refunds go to the refunds agent.",
    description="invoices, charges and payments",
    model=ScriptedModel({"billing": [reply("", Call("transfer_to_refunds"))]}),
    handoffs=[refunds],
)
front = Agent(
    "front",
    instructions="Greet the customer and pass them to the right team.",
    model=ScriptedModel({"front": [reply("", Call("transfer_to_billing"))]}),
    handoffs=[billing],
)


@workflow
async def support(ctx: RunContext, message: str) -> dict[str, str]:
    result = await front.run(ctx, message)
    return {"answered_by": result.agent, "answer": result.output}


async def main() -> None:
    with tempfile.TemporaryDirectory() as tmp:
        async with Corral(f"sqlite:///{Path(tmp) / 'corral.db'}") as corral:
            handle = await corral.start(support, "I was charged twice for order A-1001")
            await corral.run_until_idle()
            result = await handle.wait_for_result()
            print(f"answered by {result['answered_by']}: {result['answer']}")
            for step in await corral.journal(handle.run_id):
                print(f"  {step.seq:>2} {step.kind:<6} {step.name:<20} {step.status}")


if __name__ == "__main__":
    asyncio.run(main())
