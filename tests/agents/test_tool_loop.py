"""The single-agent tool loop on the scripted model: whole step sequences, bad input, limits."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import pytest
from pydantic import BaseModel

from corral import Corral, RunContext
from corral.agents import Agent, AgentEvent, agent_events
from corral.errors import ToolRetry
from corral.models import Call, ModelRequest, ScriptedModel, reply
from corral.tools import ToolContext, tool

from .harness import run_error, steps_of


@tool
async def lookup_order(order_id: str) -> dict[str, Any]:
    """Find an order.

    Args:
        order_id: Like A-1001.
    """
    if not order_id.startswith("A-"):
        raise ToolRetry(f"no order {order_id!r}: order ids look like A-1001")
    return {"order_id": order_id, "status": "shipped", "total_cents": 4200}


@tool
def weather(city: str) -> str:
    """Today's weather (a sync tool: it runs in a thread)."""
    return f"sunny in {city}"


seen_keys: list[str] = []


@tool
async def remember_key(ctx: ToolContext) -> str:
    """Return the idempotency key the tool was given."""
    seen_keys.append(ctx.idempotency_key)
    return ctx.idempotency_key


class Verdict(BaseModel):
    approved: bool
    reason: str


async def run_agent(corral: Corral, agent: Agent[Any], text: str) -> str:
    handle = await corral.start(agent, text)
    await corral.run_until_idle()
    return handle.run_id


async def test_parallel_tool_calls_then_answer(corral: Corral) -> None:
    model = ScriptedModel(
        [
            reply("", Call("lookup_order", {"order_id": "A-1"}), Call("weather", {"city": "Oslo"})),
            "Order A-1 shipped; sunny in Oslo.",
        ]
    )
    agent = Agent("helper", model=model, tools=[lookup_order, weather])
    run_id = await run_agent(corral, agent, "Where is A-1, and the weather?")
    run = await corral.get_run(run_id)
    assert run.status == "succeeded"
    assert json.loads(run.result or "") == "Order A-1 shipped; sunny in Oslo."
    assert await steps_of(corral, run_id) == [
        ("model:helper", "succeeded"),
        ("tool:lookup_order", "succeeded"),
        ("tool:weather", "succeeded"),
        ("model:helper", "succeeded"),
    ]


async def test_the_model_sees_tool_results_and_usage_is_summed(corral: Corral) -> None:
    requests: list[ModelRequest] = []

    def rules(request: ModelRequest) -> Any:
        requests.append(request)
        if not any(m.role == "tool" for m in request.messages):
            return reply("", Call("lookup_order", {"order_id": "A-7"}))
        return "done"

    agent = Agent("helper", model=ScriptedModel(rules=rules), tools=[lookup_order])

    @corral.workflow
    async def flow(ctx: RunContext, text: str) -> dict[str, Any]:
        result = await agent.run(ctx, text)
        return {"usage": result.usage.model_dump(), "turns": result.turns}

    handle = await corral.start(flow, "hi")
    await corral.run_until_idle()
    out = await handle.wait_for_result()
    assert out["turns"] == 2
    assert out["usage"]["requests"] == 2
    assert out["usage"]["input_tokens"] > 0
    assert [spec.name for spec in requests[0].tools] == ["lookup_order"]
    tool_message = requests[1].messages[-1]
    assert tool_message.role == "tool"
    assert json.loads(tool_message.content)["status"] == "shipped"


async def test_tool_gets_the_step_idempotency_key(corral: Corral) -> None:
    seen_keys.clear()
    model = ScriptedModel([reply("", Call("remember_key")), "ok"])
    run_id = await run_agent(corral, Agent("keys", model=model, tools=[remember_key]), "go")
    assert seen_keys == [f"{run_id}:2"]


async def test_bad_tool_calls_go_back_to_the_model_and_are_journaled(corral: Corral) -> None:
    model = ScriptedModel(
        [
            reply("", Call("no_such_tool", {})),
            reply("", Call("lookup_order", "{not json")),
            reply("", Call("lookup_order", {"order_id": 7})),
            reply("", Call("lookup_order", {"order_id": "B-9"})),
            "gave up",
        ]
    )
    requests: list[ModelRequest] = []

    class Recording(ScriptedModel):
        async def complete(self, request: ModelRequest) -> Any:
            requests.append(request)
            return await model.complete(request)

    agent = Agent("helper", model=Recording(), tools=[lookup_order])
    run_id = await run_agent(corral, agent, "find my order")
    assert (await corral.get_run(run_id)).status == "succeeded"
    assert await steps_of(corral, run_id) == [
        ("model:helper", "succeeded"),
        ("tool:no_such_tool", "failed"),
        ("model:helper", "succeeded"),
        ("tool:lookup_order", "failed"),
        ("model:helper", "succeeded"),
        ("tool:lookup_order", "failed"),
        ("model:helper", "succeeded"),
        ("tool:lookup_order", "failed"),
        ("model:helper", "succeeded"),
    ]
    told = [r.messages[-1].content for r in requests[1:]]
    assert "has no tool named 'no_such_tool'" in told[0]
    assert "lookup_order" in told[0]
    assert "not valid JSON" in told[1]
    assert "order_id: Input should be a valid string" in told[2]
    assert told[3] == "no order 'B-9': order ids look like A-1001"  # ToolRetry: said as is


async def test_a_tool_that_raises_is_reported_to_the_model(corral: Corral) -> None:
    @tool
    async def explode() -> None:
        """Always fails."""
        raise RuntimeError("disk on fire")

    model = ScriptedModel([reply("", Call("explode")), "sorry"])
    run_id = await run_agent(corral, Agent("helper", model=model, tools=[explode]), "go")
    journal = await corral.journal(run_id)
    assert [(r.name, r.status) for r in journal] == [
        ("model:helper", "succeeded"),
        ("tool:explode", "failed"),
        ("model:helper", "succeeded"),
    ]
    assert json.loads(journal[1].error or "")["message"] == "disk on fire"


async def test_typed_output_is_validated_and_retried(corral: Corral) -> None:
    fenced = '```json\n{"approved": true, "reason": "ok"}\n```'
    model = ScriptedModel(['{"approved": "maybe"}', fenced])
    agent: Agent[Verdict] = Agent("judge", model=model, output_type=Verdict)

    @corral.workflow
    async def flow(ctx: RunContext, text: str) -> Verdict:
        return (await agent.run(ctx, text)).output

    handle = await corral.start(flow, "judge this")
    await corral.run_until_idle()
    assert await handle.wait_for_result() == Verdict(approved=True, reason="ok")
    assert await steps_of(corral, handle.run_id) == [
        ("model:judge", "succeeded"),
        ("model:judge", "succeeded"),
    ]


async def test_output_that_never_satisfies_its_schema_fails_clearly(corral: Corral) -> None:
    model = ScriptedModel(rules=lambda request: "not json at all")
    agent = Agent("judge", model=model, output_type=Verdict, output_retries=2)
    run_id = await run_agent(corral, agent, "judge")
    assert await steps_of(corral, run_id) == [
        ("model:judge", "succeeded"),
        ("model:judge", "succeeded"),
        ("model:judge", "succeeded"),
        ("agent.failed:judge", "failed"),
    ]
    error = await run_error(corral, run_id)
    assert error["code"] == "output_invalid"
    assert error["agent"] == "judge"
    assert error["schema"] == "Verdict"
    assert "Invalid JSON" in error["violation"]


async def test_success_checks_are_part_of_the_contract(corral: Corral) -> None:
    def short(text: str) -> str | None:
        return None if len(text) < 10 else "keep it under 10 characters"

    model = ScriptedModel(["a long rambling answer", "brief"])
    agent = Agent("terse", model=model, checks=[short])
    run_id = await run_agent(corral, agent, "say something")
    run = await corral.get_run(run_id)
    assert json.loads(run.result or "") == "brief"


async def test_turn_limit_ends_a_loop_that_never_answers(corral: Corral) -> None:
    model = ScriptedModel(rules=lambda request: reply("", Call("weather", {"city": "Oslo"})))
    agent = Agent("looper", model=model, tools=[weather], max_turns=3)
    run_id = await run_agent(corral, agent, "go")
    names = [name for name, _ in await steps_of(corral, run_id)]
    assert names == ["model:looper", "tool:weather"] * 3 + ["agent.failed:looper"]
    error = await run_error(corral, run_id)
    assert error["code"] == "turn_limit"
    assert error["max_turns"] == 3


async def test_a_model_that_fails_fails_the_run_with_its_error(corral: Corral) -> None:
    agent = Agent("mute", model=ScriptedModel([]))
    run_id = await run_agent(corral, agent, "hello")
    assert await steps_of(corral, run_id) == [("model:mute", "failed")]
    error = await run_error(corral, run_id)
    assert error["code"] == "step_failed"
    assert error["error_type"] == "ModelCallFailed"
    assert "no turn 1" in error["error_message"]


async def test_unknown_model_prefix_fails_the_step_with_a_clear_message(corral: Corral) -> None:
    run_id = await run_agent(corral, Agent("lost", model="gpt4:turbo"), "hello")
    error = await run_error(corral, run_id)
    assert error["error_type"] == "UnknownModel"
    assert "provider prefix 'gpt4'" in error["error_message"]


async def test_missing_api_key_names_the_setting(
    corral: Corral, monkeypatch: pytest.MonkeyPatch, tmp_path: Path
) -> None:
    for name in ("OPENAI_API_KEY", "CORRAL_OPENAI_API_KEY", "OPENAI_BASE_URL"):
        monkeypatch.delenv(name, raising=False)
    monkeypatch.chdir(tmp_path)  # no .env file here
    run_id = await run_agent(corral, Agent("keyless", model="openai:gpt-4.1-mini"), "hi")
    error = await run_error(corral, run_id)
    assert error["error_type"] == "ModelNotConfigured"
    assert "OPENAI_API_KEY" in error["error_message"]


async def test_the_default_model_is_labelled_scripted(
    corral: Corral, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.delenv("CORRAL_MODEL", raising=False)
    run_id = await run_agent(corral, Agent("plain"), "hello there")
    result = json.loads((await corral.get_run(run_id)).result or "")
    assert result.startswith("[scripted model]")
    record = (await corral.journal(run_id))[0]
    assert json.loads(record.result or "")["model"] == "scripted:default"


async def test_events_stream_while_the_journal_records_once(corral: Corral) -> None:
    model = ScriptedModel([reply("", Call("weather", {"city": "Rome"})), "It is sunny in Rome"])
    agent = Agent("streamer", model=model, tools=[weather])
    events: list[AgentEvent] = []
    with agent_events.listen(events.append):
        run_id = await run_agent(corral, agent, "weather?")
    kinds = [e.kind for e in events]
    # first answer: a tool-call delta and the response; second: five words and the response
    assert kinds == ["model"] * 2 + ["tool_started", "tool_finished"] + ["model"] * 6 + ["final"]
    text = "".join(
        e.model_event.text
        for e in events
        if e.model_event is not None and e.model_event.kind == "text"
    )
    assert text == "It is sunny in Rome"
    assert all(e.run_id == run_id for e in events)
    assert len(await corral.journal(run_id)) == 3


async def test_handoff_passes_the_conversation(corral: Corral) -> None:
    refunds = Agent(
        "refunds",
        instructions="You handle refunds.",
        model=ScriptedModel({"refunds": ["Refund issued for A-1."]}),
    )
    front = Agent(
        "front",
        model=ScriptedModel({"front": [reply("", Call("transfer_to_refunds"))]}),
        handoffs=[refunds],
    )
    requests: list[ModelRequest] = []
    real = refunds.model()

    class Spy(ScriptedModel):
        async def complete(self, request: ModelRequest) -> Any:
            requests.append(request)
            return await real.complete(request)

    refunds._model = Spy()

    @corral.workflow
    async def flow(ctx: RunContext, text: str) -> list[str]:
        result = await front.run(ctx, text)
        return [result.agent, result.output]

    handle = await corral.start(flow, "I want my money back")
    await corral.run_until_idle()
    assert await handle.wait_for_result() == ["refunds", "Refund issued for A-1."]
    assert await steps_of(corral, handle.run_id) == [
        ("model:front", "succeeded"),
        ("handoff:refunds", "succeeded"),
        ("model:refunds", "succeeded"),
    ]
    assert requests[0].instructions == "You handle refunds."
    assert requests[0].messages[0].content == "I want my money back"


async def test_delegation_runs_each_specialist_as_a_child_run(corral: Corral) -> None:
    def specialist(name: str) -> Agent[Any]:
        return Agent(
            name,
            description=f"the {name} expert",
            model=ScriptedModel(rules=lambda r: f"{name} says: {r.messages[0].content}"),
        )

    billing, shipping = specialist("billing"), specialist("shipping")
    boss = Agent(
        "boss",
        model=ScriptedModel(
            [
                reply(
                    "",
                    Call("ask_billing", {"task": "check invoice"}),
                    Call("ask_shipping", {"task": "track parcel"}),
                ),
                "All sorted.",
            ]
        ),
        delegates=[billing, shipping],
    )
    run_id = await run_agent(corral, boss, "help")
    assert (await corral.get_run(run_id)).status == "succeeded"
    assert await steps_of(corral, run_id) == [
        ("model:boss", "succeeded"),
        ("agent:billing", "succeeded"),  # started…
        ("agent:billing", "succeeded"),  # …and awaited, numbered at the call
        ("agent:shipping", "succeeded"),
        ("agent:shipping", "succeeded"),
        ("model:boss", "succeeded"),
    ]
    journal = await corral.journal(run_id)
    assert [r.kind for r in journal[1:5]] == ["child.start", "child.result"] * 2
    children = await corral.list_runs(parent_run_id=run_id)
    outputs = sorted(json.loads(c.result or "") for c in children)
    assert outputs == ["billing says: check invoice", "shipping says: track parcel"]


async def test_a_model_repeating_the_same_call_is_stopped(corral: Corral) -> None:
    model = ScriptedModel(rules=lambda request: reply("", Call("weather", {"city": "Oslo"})))
    agent = Agent("parrot", model=model, tools=[weather], max_turns=20, max_identical_calls=2)
    run_id = await run_agent(corral, agent, "go")
    names = [name for name, _ in await steps_of(corral, run_id)]
    assert names == [*["model:parrot", "tool:weather"] * 2, "model:parrot", "agent.failed:parrot"]
    error = await run_error(corral, run_id)
    assert error["code"] == "repeated_tool_call"
    assert error["tool"] == "weather"


async def test_the_same_tool_with_other_arguments_is_not_a_repeat(corral: Corral) -> None:
    def rules(request: ModelRequest) -> Any:
        made = sum(1 for m in request.messages if m.role == "tool")
        if made < 4:
            return reply("", Call("weather", {"city": f"city {made}"}))
        return "four forecasts"

    agent = Agent(
        "tourist", model=ScriptedModel(rules=rules), tools=[weather], max_identical_calls=1
    )
    run_id = await run_agent(corral, agent, "go")
    assert json.loads((await corral.get_run(run_id)).result or "") == "four forecasts"
