"""A worker process that runs a tool-using agent: `python -m durability.agent_worker URL LEDGER`.

The agent's scripted model and its tools write every call they receive into the ledger (its own
SQLite file, apart from Corral's database): a crashed worker cannot lose a call it made. The
ledger is keyed by the step's idempotency key, so the test can tell a step that ran twice.
It runs until no run is left (`until_idle`); arm a crash with `CORRAL_CRASH_AT`.
"""

from __future__ import annotations

import asyncio
import os
import sqlite3
import sys
from typing import Any

from corral import Corral, current_step
from corral.agents import Agent
from corral.models import Call, ModelRequest, ModelResponse, ScriptedModel, reply
from corral.models.scripted import Turn
from corral.tools import ToolContext, tool

LEDGER_ENV = "CORRAL_TEST_AGENT_LEDGER"


def record(kind: str, key: str) -> None:
    with sqlite3.connect(os.environ[LEDGER_ENV]) as db:
        db.execute("CREATE TABLE IF NOT EXISTS calls (kind TEXT, key TEXT, pid INTEGER)")
        db.execute("INSERT INTO calls VALUES (?, ?, ?)", (kind, key, os.getpid()))


def plan(request: ModelRequest) -> Turn:
    """Research two sources in parallel, then a summary, then answer."""
    results = [m for m in request.messages if m.role == "tool"]
    if not results:
        return reply("", Call("fetch", {"source": "alpha"}), Call("fetch", {"source": "beta"}))
    if len(results) == 2:
        return reply("", Call("summarize", {"points": [m.content for m in results]}))
    return reply(f"Answer: {results[-1].content}")


class LedgerModel(ScriptedModel):
    async def complete(self, request: ModelRequest) -> ModelResponse:
        step = current_step()
        assert step is not None
        record("model", step.idempotency_key)
        return await super().complete(request)


@tool
async def fetch(source: str, ctx: ToolContext) -> str:
    """Fetch one source."""
    record("tool:fetch", ctx.idempotency_key)
    await asyncio.sleep(0.01)  # real I/O: the parallel calls overlap
    return f"facts from {source}"


@tool
async def summarize(points: list[str], ctx: ToolContext) -> str:
    """Summarise points."""
    record("tool:summarize", ctx.idempotency_key)
    return " + ".join(points)


researcher: Agent[Any] = Agent(
    "researcher", model=LedgerModel(rules=plan), tools=[fetch, summarize]
)

EXPECTED = "Answer: facts from alpha + facts from beta"


async def main(url: str) -> None:
    async with Corral(url, lease_ttl=30.0, poll_interval=0.05) as corral:
        corral.register(researcher)
        await corral.worker(concurrency=4).run(until_idle=True)


if __name__ == "__main__":
    os.environ[LEDGER_ENV] = sys.argv[2]
    asyncio.run(main(sys.argv[1]))
