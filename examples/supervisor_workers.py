"""Supervisor and workers, two ways: `fan_out` (the code splits the work) and an LLM supervisor
(a model splits it, through `ask_<worker>` tools). Every worker is a child run; all run at once.

    python examples/supervisor_workers.py
"""

from __future__ import annotations

import asyncio
import json
import tempfile
from pathlib import Path
from typing import Any

from pydantic import BaseModel

from corral import Corral, RunContext, workflow
from corral.agents import Agent, fan_out
from corral.models import Call, ModelRequest, ScriptedModel, reply

FACTS = {
    "tides": ["the moon's pull raises two bulges of water", "high tide comes about every 12h25m"],
    "moons": ["the moon is drifting away by 3.8 cm a year"],
    "orbits": ["a lunar month is 29.5 days"],
}


class Finding(BaseModel):
    topic: str
    facts: list[str]


def researcher_rules(request: ModelRequest) -> str:
    topic = request.messages[-1].content.removeprefix("Research ")
    return Finding(topic=topic, facts=FACTS.get(topic, [])).model_dump_json()


researcher = {
    topic: Agent(
        f"researcher-{topic}",
        instructions="Research one topic; answer with facts.",
        model=ScriptedModel(rules=researcher_rules),
        output_type=Finding,
    )
    for topic in FACTS
}


def brief(results: dict[str, Any]) -> str:
    """How the workers' results combine: declared once, by the supervisor's code."""
    return "; ".join(f"{key}: {len(finding.facts)} fact(s)" for key, finding in results.items())


@workflow
async def research_brief(ctx: RunContext, topics: list[str]) -> str:
    tasks = {topic: (researcher[topic], f"Research {topic}") for topic in topics}
    return await fan_out(ctx, tasks, merge=brief)


# The same shape with a model in the middle: it decides whom to ask.
def editor_rules(request: ModelRequest) -> Any:
    answers = [m.content for m in request.messages if m.role == "tool"]
    if not answers:
        return reply(
            "",
            Call("ask_researcher-tides", {"task": "Research tides"}),
            Call("ask_researcher-moons", {"task": "Research moons"}),
        )
    facts = [fact for answer in answers for fact in json.loads(answer)["facts"]]
    return "Editor's summary: " + "; ".join(facts)


editor = Agent(
    "editor",
    instructions="Ask the researchers you need, then summarise.",
    model=ScriptedModel(rules=editor_rules),
    delegates=[researcher["tides"], researcher["moons"]],
)


async def print_journal(corral: Corral, run_id: str, indent: str = "  ") -> None:
    """A run's journal, with each child run's journal under the step that started it."""
    children = {c.parent_step_seq: c for c in await corral.list_runs(parent_run_id=run_id)}
    for step in await corral.journal(run_id):
        print(f"{indent}{step.seq:>2} {step.kind:<12} {step.name:<28} {step.status}")
        child = children.get(step.seq) if step.kind == "child.start" else None
        if child is not None:
            await print_journal(corral, child.run_id, indent + "     ")


async def main() -> None:
    with tempfile.TemporaryDirectory() as tmp:
        async with Corral(f"sqlite:///{Path(tmp) / 'corral.db'}") as corral:
            handle = await corral.start(research_brief, ["tides", "moons", "orbits"])
            await corral.run_until_idle()
            print("Brief:", await handle.wait_for_result())
            await print_journal(corral, handle.run_id)

            supervised = await corral.start(editor, "Write a note on the sea and the moon")
            await corral.run_until_idle()
            print("Supervisor:", await supervised.wait_for_result())
            await print_journal(corral, supervised.run_id)


if __name__ == "__main__":
    asyncio.run(main())
