"""A router: rules first (no model call), then a classifier agent, then a default route. The
decision is journaled as `route:support`; the chosen team runs as a child run.

    python examples/router.py
"""

from __future__ import annotations

import asyncio
import tempfile
from pathlib import Path
from typing import Any

from corral import Corral
from corral.agents import Agent, Router
from corral.models import ModelRequest, ScriptedModel


def team(name: str, description: str) -> Agent[Any]:
    def rules(request: ModelRequest) -> str:
        return f"[{name}] on it: {request.messages[-1].content}"

    return Agent(name, description=description, model=ScriptedModel(rules=rules))


refunds = team("refunds", "money back for orders")
tech = team("tech", "devices, apps and accounts that do not work")
front_desk = team("front_desk", "everything else")


def classify(request: ModelRequest) -> str:
    """A stand-in for a real model: it answers with a route, as its contract asks."""
    ticket = request.messages[-1].content.lower()
    if any(word in ticket for word in ("screen", "app", "password")):
        return '{"route": "tech"}'
    return '{"route": "front_desk"}'


support = Router(
    "support",
    routes={"refunds": refunds, "tech": tech, "front_desk": front_desk},
    rules=[(lambda ticket: "refund" in str(ticket).lower(), "refunds")],
    classifier=Agent(
        "classifier",
        instructions="Decide which team handles the ticket.",
        model=ScriptedModel(rules=classify),
    ),
)
no_classifier = Router(
    "desk",
    routes={"refunds": refunds, "front_desk": front_desk},
    rules=support.rules,
    default="front_desk",
)


async def main() -> None:
    tickets = [
        (support, "I want a refund for order A-1001"),
        (support, "The app shows a black screen"),
        (no_classifier, "Do you sell gift cards?"),
    ]
    with tempfile.TemporaryDirectory() as tmp:
        async with Corral(f"sqlite:///{Path(tmp) / 'corral.db'}") as corral:
            for router, ticket in tickets:
                handle = await corral.start(router, ticket)
                await corral.run_until_idle()
                routed = await handle.wait_for_result()
                print(f"{ticket!r} -> {routed.route} ({routed.decided_by}): {routed.output}")
                for step in await corral.journal(handle.run_id):
                    print(f"  {step.seq:>2} {step.kind:<12} {step.name:<18} {step.status}")


if __name__ == "__main__":
    asyncio.run(main())
