"""An agent whose tools come from an MCP server: listing and calls are journaled steps."""

from __future__ import annotations

import json
import sys
from pathlib import Path
from typing import Any

from corral import Corral, RunContext
from corral.agents import Agent
from corral.models import Call, ModelRequest, ScriptedModel, reply
from corral.models.scripted import Turn
from corral.tools import MCPToolset

from .harness import steps_of

SERVER = str(Path(__file__).resolve().parent.parent / "tools" / "mcp_server.py")


def plan(request: ModelRequest) -> Turn:
    results = [m.content for m in request.messages if m.role == "tool"]
    if not results:
        assert [spec.name for spec in request.tools] == ["calc_add"]
        return reply("", Call("calc_add", {"a": 20, "b": 22}), Call("calc_add", {"a": "x", "b": 1}))
    return reply(f"results: {' | '.join(results)}")


async def test_mcp_tools_are_listed_once_and_called_as_steps(corral: Corral) -> None:
    toolset = MCPToolset.stdio(
        "calc", sys.executable, [SERVER], prefix="calc", allowed_tools=["add"]
    )
    agent: Agent[Any] = Agent("mathematician", model=ScriptedModel(rules=plan), tools=[toolset])

    @corral.workflow
    async def solve(ctx: RunContext, question: str) -> str:
        return str((await agent.run(ctx, question)).output)

    try:
        handle = await corral.start(solve, "what is 20 + 22?")
        await corral.run_until_idle()
        answer = await handle.wait_for_result()
    finally:
        await agent.aclose()
    assert answer.startswith('results: {"result": 42} | Error (ToolArgumentsInvalid): ')
    assert "'x' is not of type 'integer'" in answer
    assert await steps_of(corral, handle.run_id) == [
        ("tools.list:calc", "succeeded"),
        ("model:mathematician", "succeeded"),
        ("tool:calc_add", "succeeded"),
        ("tool:calc_add", "failed"),
        ("model:mathematician", "succeeded"),
    ]
    listed = json.loads((await corral.journal(handle.run_id))[0].result or "")
    assert [tool["name"] for tool in listed] == ["calc_add"]
