"""An agent for the CLI tests: `corral run tests.cli.agent_app:adder -i 'add 2 and 3' --wait`."""

from __future__ import annotations

from corral.agents import Agent
from corral.models import Call, ModelRequest, ScriptedModel, reply
from corral.models.scripted import Turn
from corral.tools import tool


@tool
def add(a: int, b: int) -> int:
    """Add two whole numbers."""
    return a + b


def plan(request: ModelRequest) -> Turn:
    results = [m.content for m in request.messages if m.role == "tool"]
    if not results:
        return reply("", Call("add", {"a": 2, "b": 3}))
    return reply(f"The sum is {results[0]}.")


adder = Agent("adder", model=ScriptedModel(rules=plan), tools=[add])
