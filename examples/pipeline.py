"""A pipeline: researcher → writer → publish, each output validated as the next stage's input.

Every stage runs inline in one run (the agents' model steps are in its journal). The second
run feeds the writer notes without their points: the pipeline stops with `OutputInvalid`
naming both stages and the violation, journaled as `pipeline.failed:articles`.

    python examples/pipeline.py
"""

from __future__ import annotations

import asyncio
import json
import tempfile
from pathlib import Path

from pydantic import BaseModel

from corral import Corral, RunContext, RunFailed
from corral.agents import Agent, Pipeline, Stage
from corral.models import ModelRequest, ScriptedModel


class Notes(BaseModel):
    topic: str
    points: list[str]


class Article(BaseModel):
    title: str
    body: str
    words: int


def research(request: ModelRequest) -> str:
    topic = request.messages[-1].content
    if topic == "nothing":
        return json.dumps({"topic": topic})  # no points: the writer's input type refuses it
    points = ["the moon pulls the sea", "two high tides a day", "springs at full moon"]
    return "```json\n" + json.dumps({"topic": topic, "points": points}) + "\n```"


def write(request: ModelRequest) -> str:
    notes = Notes.model_validate_json(request.messages[-1].content)
    return f"{notes.topic.title()}\n" + " ".join(p.capitalize() + "." for p in notes.points)


researcher = Agent("researcher", instructions="Take notes.", model=ScriptedModel(rules=research))
writer = Agent("writer", instructions="Write from the notes.", model=ScriptedModel(rules=write))


async def count_words(text: str) -> int:
    return len(text.split())


async def publish(ctx: RunContext, draft: str) -> Article:
    title, _, body = draft.partition("\n")
    words = await ctx.step(count_words, body, name="count_words")
    return Article(title=title, body=body, words=words)


articles = Pipeline(
    "articles",
    [researcher, Stage("write", writer, input_type=Notes), Stage("publish", publish)],
)


async def print_journal(corral: Corral, run_id: str) -> None:
    for step in await corral.journal(run_id):
        print(f"  {step.seq:>2} {step.kind:<6} {step.name:<26} {step.status}")


async def main() -> None:
    with tempfile.TemporaryDirectory() as tmp:
        async with Corral(f"sqlite:///{Path(tmp) / 'corral.db'}") as corral:
            handle = await corral.start(articles, "tides")
            await corral.run_until_idle()
            article = await handle.wait_for_result()
            print(f"Published: {article['title']!r} ({article['words']} words)")
            await print_journal(corral, handle.run_id)

            failing = await corral.start(articles, "nothing")
            await corral.run_until_idle()
            try:
                await failing.wait_for_result()
            except RunFailed:
                error = json.loads((await failing.get()).error or "{}")
                print(f"Refused: {error['message']}")
            await print_journal(corral, failing.run_id)


if __name__ == "__main__":
    asyncio.run(main())
