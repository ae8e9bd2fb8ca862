"""The pipeline: stages inline in one run, each output validated as the next stage's input."""

from __future__ import annotations

import json
from typing import Any

import pytest
from pydantic import BaseModel

from corral import Corral, RunContext
from corral.agents import Agent, Pipeline, Stage
from corral.errors import AgentDefinitionError, InvalidInput
from corral.models import ModelRequest, ScriptedModel

from .harness import run_error, steps_of


class Notes(BaseModel):
    topic: str
    points: list[str]


class Article(BaseModel):
    title: str
    words: int


def researcher(answer: str) -> Agent[Any]:
    return Agent("researcher", model=ScriptedModel([answer]))


def writer_rules(request: ModelRequest) -> str:
    notes = Notes.model_validate_json(request.messages[-1].content)
    return f"{notes.topic.title()}: " + ". ".join(notes.points) + "."


writer = Agent("writer", model=ScriptedModel(rules=writer_rules))


async def count_words(text: str) -> int:
    return len(text.split())


async def publish(ctx: RunContext, draft: str) -> Article:
    """A function stage: it takes a step of its own."""
    words = await ctx.step(count_words, draft, name="count_words")
    return Article(title=draft.split(":")[0], words=words)


NOTES = '```json\n{"topic": "tides", "points": ["the moon pulls", "twice a day"]}\n```'


async def test_stages_run_inline_in_order(corral: Corral) -> None:
    pipeline = Pipeline(
        "articles",
        [researcher(NOTES), Stage("write", writer, input_type=Notes), Stage("publish", publish)],
    )
    handle = await corral.start(pipeline, "tides")
    await corral.run_until_idle()
    assert await handle.wait_for_result() == {"title": "Tides", "words": 7}
    assert await steps_of(corral, handle.run_id) == [
        ("model:researcher", "succeeded"),
        ("model:writer", "succeeded"),
        ("count_words", "succeeded"),
    ]
    assert await corral.list_runs(parent_run_id=handle.run_id) == []  # no child runs


async def test_a_typed_agent_output_feeds_a_typed_stage(corral: Corral) -> None:
    typed = Agent("researcher", model=ScriptedModel([NOTES]), output_type=Notes)

    async def headline(ctx: RunContext, notes: Notes) -> str:
        return f"{notes.topic}: {len(notes.points)} points"

    pipeline = Pipeline("brief", [typed, Stage("headline", headline, input_type=Notes)])

    @corral.workflow
    async def flow(ctx: RunContext, topic: str) -> str:
        return str(await pipeline.run(ctx, topic))

    handle = await corral.start(flow, "tides")
    await corral.run_until_idle()
    assert await handle.wait_for_result() == "tides: 2 points"
    assert await steps_of(corral, handle.run_id) == [("model:researcher", "succeeded")]


async def test_a_mismatch_names_the_pipeline_both_stages_and_the_violation(
    corral: Corral,
) -> None:
    pipeline = Pipeline(
        "articles",
        [researcher('{"topic": "tides"}'), Stage("write", writer, input_type=Notes)],
    )
    handle = await corral.start(pipeline, "tides")
    await corral.run_until_idle()
    assert await steps_of(corral, handle.run_id) == [
        ("model:researcher", "succeeded"),
        ("pipeline.failed:articles", "failed"),
    ]
    error = await run_error(corral, handle.run_id)
    assert error["code"] == "output_invalid"
    assert error["pipeline"] == "articles"
    assert error["stage"] == "stage 'researcher'"
    assert error["next_stage"] == "write"
    assert error["schema"] == "Notes"
    assert error["violation"] == "points: Field required"
    assert "pipeline 'articles': the output of stage 'researcher'" in error["message"]


async def test_text_that_is_not_json_is_reported_as_such(corral: Corral) -> None:
    pipeline = Pipeline(
        "articles", [researcher("Tides come and go."), Stage("write", writer, input_type=Notes)]
    )
    handle = await corral.start(pipeline, "tides")
    await corral.run_until_idle()
    error = await run_error(corral, handle.run_id)
    assert "Input should be a valid dictionary or instance of Notes" in error["violation"]


async def test_the_pipeline_input_is_checked_against_the_first_stage(corral: Corral) -> None:
    pipeline = Pipeline("typed", [Stage("write", writer, input_type=Notes)])
    with pytest.raises(InvalidInput, match="input of workflow 'pipeline:typed'"):
        await corral.start(pipeline, {"topic": "no points"})

    @corral.workflow
    async def flow(ctx: RunContext, value: Any) -> Any:
        return await pipeline.run(ctx, value)

    handle = await corral.start(flow, {"topic": "no points"})
    await corral.run_until_idle()
    assert await steps_of(corral, handle.run_id) == [("pipeline.failed:typed", "failed")]
    error = await run_error(corral, handle.run_id)
    assert error["stage"] == "(the pipeline's input)"


def test_malformed_pipelines_are_refused() -> None:
    with pytest.raises(AgentDefinitionError, match="has no stages"):
        Pipeline("empty", [])
    with pytest.raises(AgentDefinitionError, match="two stages named 'writer'"):
        Pipeline("twice", [writer, writer])

    def not_async(ctx: RunContext, value: Any) -> Any:
        return value

    with pytest.raises(AgentDefinitionError, match="stage 'sync': run must be an Agent"):
        Stage("sync", not_async)
    with pytest.raises(AgentDefinitionError, match="stage name 'a b'"):
        Stage("a b", writer)


def test_the_workflow_declares_its_types_and_children() -> None:
    helper = Agent("helper", model=ScriptedModel(["ok"]))
    delegating = Agent("boss", model=ScriptedModel(["ok"]), delegates=[helper])
    pipeline = Pipeline("p", [Stage("in", delegating, input_type=Notes), researcher("x")])
    assert pipeline.workflow.name == "pipeline:p"
    assert pipeline.workflow.input_type is Notes
    assert pipeline.workflow.output_type is str
    names = sorted(wf.name for wf in pipeline.__corral_workflows__())
    assert names == ["agent:boss", "agent:helper", "agent:researcher", "pipeline:p"]
    assert json.loads(pipeline.workflow.encode_input({"topic": "t", "points": []})) == {
        "topic": "t",
        "points": [],
    }


async def test_a_pipeline_waiting_mid_way_resumes_without_repeating_a_stage(
    corral: Corral,
) -> None:
    calls: list[str] = []

    def research(request: ModelRequest) -> str:
        calls.append("researcher")
        return NOTES

    def write(request: ModelRequest) -> str:
        calls.append("writer")
        return writer_rules(request)

    async def approve(ctx: RunContext, notes: str) -> str:
        """A person approves the notes before anything is written from them."""
        assert await ctx.wait_for_signal("approve") == "ok"
        return notes

    pipeline = Pipeline(
        "reviewed",
        [
            Agent("researcher", model=ScriptedModel(rules=research)),
            Stage("approve", approve),
            Stage("write", Agent("writer", model=ScriptedModel(rules=write)), input_type=Notes),
        ],
    )
    handle = await corral.start(pipeline, "tides")
    await corral.run_until_idle()
    assert await handle.status() == "waiting"
    await corral.signal(handle.run_id, "approve", "ok")
    await corral.run_until_idle()
    assert await handle.wait_for_result() == "Tides: the moon pulls. twice a day."
    assert calls == ["researcher", "writer"]  # the researcher replayed, not asked again
    journal = await corral.journal(handle.run_id)
    assert [(r.kind, r.name, r.status) for r in journal] == [
        ("step", "model:researcher", "succeeded"),
        ("signal", "approve", "succeeded"),
        ("step", "model:writer", "succeeded"),
    ]
