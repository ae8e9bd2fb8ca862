"""Supervisor and workers: `fan_out` (no model in the middle) and an LLM supervisor delegating."""

from __future__ import annotations

import json
from typing import Any, cast

import pytest
from pydantic import BaseModel

from corral import Corral, RunContext
from corral.agents import Agent, AgentTask, TaskFailed, fan_out
from corral.errors import AgentDefinitionError
from corral.models import Call, ModelRequest, ScriptedModel, reply

from .harness import run_error, steps_of


class Finding(BaseModel):
    topic: str
    facts: list[str]


def worker(name: str) -> Agent[Any]:
    """An agent that answers `<name>: <its task>`."""

    def rules(request: ModelRequest) -> str:
        return f"{name}: {request.messages[-1].content}"

    return Agent(name, description=f"the {name} worker", model=ScriptedModel(rules=rules))


async def children_by_workflow(corral: Corral, run_id: str) -> dict[str, str]:
    """The child runs of `run_id`: workflow name → child run id."""
    return {c.workflow: c.run_id for c in await corral.list_runs(parent_run_id=run_id)}


async def test_fan_out_starts_every_child_before_awaiting_any(corral: Corral) -> None:
    billing, shipping = worker("billing"), worker("shipping")

    @corral.workflow
    async def triage(ctx: RunContext, ticket: str) -> dict[str, Any]:
        return await fan_out(
            ctx,
            {
                "billing": (billing, f"invoice for {ticket}"),
                "shipping": (shipping, f"parcel for {ticket}"),
            },
        )

    handle = await corral.start(triage, "T-1")
    await corral.run_until_idle()
    assert await handle.wait_for_result() == {
        "billing": "billing: invoice for T-1",
        "shipping": "shipping: parcel for T-1",
    }
    assert await steps_of(corral, handle.run_id) == [
        ("agent:billing", "succeeded"),
        ("agent:shipping", "succeeded"),
        ("agent:billing", "succeeded"),
        ("agent:shipping", "succeeded"),
    ]
    journal = await corral.journal(handle.run_id)
    assert [r.kind for r in journal] == ["child.start"] * 2 + ["child.result"] * 2
    children = await children_by_workflow(corral, handle.run_id)
    assert sorted(children) == ["agent:billing", "agent:shipping"]
    for name, child_id in children.items():
        assert await steps_of(corral, child_id) == [(f"model:{name.split(':')[1]}", "succeeded")]


async def test_merge_declares_how_results_combine(corral: Corral) -> None:
    def researcher(topic: str) -> Agent[Finding]:
        answer = json.dumps({"topic": topic, "facts": [f"{topic} fact"]})
        return Agent(topic, model=ScriptedModel([answer]), output_type=Finding)

    # Agents are made once, not in the workflow: each is a registered workflow of its own.
    researchers = {topic: researcher(topic) for topic in ("tides", "moons", "orbits")}

    def all_facts(results: dict[str, Any]) -> list[str]:
        return [fact for finding in results.values() for fact in finding.facts]

    @corral.workflow
    async def research(ctx: RunContext, topics: list[str]) -> list[str]:
        tasks = {topic: (researchers[topic], f"research {topic}") for topic in topics}
        return await fan_out(ctx, tasks, merge=all_facts)

    handle = await corral.start(research, ["tides", "moons", "orbits"])
    await corral.run_until_idle()
    assert await handle.wait_for_result() == ["tides fact", "moons fact", "orbits fact"]
    assert [name for name, _ in await steps_of(corral, handle.run_id)] == [
        "agent:tides",
        "agent:moons",
        "agent:orbits",
    ] * 2


async def test_fan_out_takes_plain_workflows_too(corral: Corral) -> None:
    @corral.workflow
    async def square(ctx: RunContext, n: int) -> int:
        return n * n

    @corral.workflow
    async def squares(ctx: RunContext, n: int) -> int:
        results = await fan_out(ctx, {"a": (square, n), "b": (square, n + 1)})
        return int(results["a"] + results["b"])

    handle = await corral.start(squares, 3)
    await corral.run_until_idle()
    assert await handle.wait_for_result() == 9 + 16
    assert await steps_of(corral, handle.run_id) == [("square", "succeeded")] * 4


async def test_a_failed_task_fails_the_fan_out_naming_its_key(corral: Corral) -> None:
    broken = Agent("broken", model=ScriptedModel([]))  # no turn to play: its model step fails
    good = worker("good")

    @corral.workflow
    async def both(ctx: RunContext, text: str) -> dict[str, Any]:
        return await fan_out(ctx, {"good": (good, text), "bad": (broken, text)})

    handle = await corral.start(both, "go")
    await corral.run_until_idle()
    assert await steps_of(corral, handle.run_id) == [
        ("agent:good", "succeeded"),
        ("agent:broken", "succeeded"),
        ("agent:good", "succeeded"),  # every child is awaited before the failure is raised
        ("agent:broken", "failed"),
    ]
    error = await run_error(corral, handle.run_id)
    assert error["code"] == "child_failed"
    assert error["key"] == "bad"
    assert "fan_out task 'bad' (broken" in error["message"]
    bad_run = (await children_by_workflow(corral, handle.run_id))["agent:broken"]
    assert error["child_run_id"] == bad_run
    assert await steps_of(corral, bad_run) == [("model:broken", "failed")]


async def test_collect_puts_the_error_under_the_key(corral: Corral) -> None:
    broken, good = Agent("broken", model=ScriptedModel([])), worker("good")

    @corral.workflow
    async def both(ctx: RunContext, text: str) -> dict[str, Any]:
        results = await fan_out(
            ctx, {"good": (good, text), "bad": (broken, text)}, on_error="collect"
        )
        assert isinstance(results["bad"], TaskFailed)
        return results

    handle = await corral.start(both, "go")
    await corral.run_until_idle()
    result = await handle.wait_for_result()
    assert result["good"] == "good: go"
    assert result["bad"]["key"] == "bad"
    assert result["bad"]["workflow"] == "agent:broken"
    assert result["bad"]["code"] == "step_failed"
    assert "no turn 1" in result["bad"]["message"]
    assert (await handle.get()).status == "succeeded"


async def test_malformed_tasks_are_refused_before_anything_starts() -> None:
    ctx = cast(RunContext, None)  # never reached: the tasks are checked first
    with pytest.raises(AgentDefinitionError, match="task 'a' must be a \\(target, input\\) pair"):
        await fan_out(ctx, {"a": cast(Any, "not a pair")})
    with pytest.raises(AgentDefinitionError, match="fan_out task 'b' is a str"):
        await fan_out(ctx, {"b": cast(Any, ("nope", 1))})
    with pytest.raises(AgentDefinitionError, match="on_error must be"):
        await fan_out(ctx, {}, on_error=cast(Any, "ignore"))


async def test_llm_supervisor_delegates_to_workers_in_parallel(corral: Corral) -> None:
    def supervisor_rules(request: ModelRequest) -> Any:
        results = [m.content for m in request.messages if m.role == "tool"]
        if not results:
            return reply(
                "",
                Call("ask_billing", {"task": "is invoice 17 paid?"}),
                Call("ask_shipping", {"task": "where is parcel 9?"}),
            )
        return "Summary: " + " / ".join(results)

    billing, shipping = worker("billing"), worker("shipping")
    supervisor = Agent(
        "supervisor",
        model=ScriptedModel(rules=supervisor_rules),
        delegates=[billing, shipping],
    )
    handle = await corral.start(supervisor, "Customer 42 is unhappy")
    await corral.run_until_idle()
    assert await handle.wait_for_result() == (
        "Summary: billing: is invoice 17 paid? / shipping: where is parcel 9?"
    )
    assert await steps_of(corral, handle.run_id) == [
        ("model:supervisor", "succeeded"),
        ("agent:billing", "succeeded"),
        ("agent:billing", "succeeded"),
        ("agent:shipping", "succeeded"),
        ("agent:shipping", "succeeded"),
        ("model:supervisor", "succeeded"),
    ]
    children = await children_by_workflow(corral, handle.run_id)
    for name in ("billing", "shipping"):
        child = await corral.get_run(children[f"agent:{name}"])
        assert AgentTask.model_validate_json(child.input).depth == 1
        assert await steps_of(corral, child.run_id) == [(f"model:{name}", "succeeded")]
