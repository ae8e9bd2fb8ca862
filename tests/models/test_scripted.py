"""The scripted model: turns per agent, rules, and answers chosen from the request alone."""

from __future__ import annotations

import json

import pytest

from corral.errors import ModelCallFailed
from corral.models import (
    Call,
    Completed,
    Message,
    ModelEvent,
    ModelRequest,
    ScriptedModel,
    TextDelta,
    ToolCall,
    ToolCallDelta,
    Turn,
    reply,
)


def conversation(*messages: Message, agent: str | None = None) -> ModelRequest:
    return ModelRequest(messages=list(messages), agent=agent)


async def collect(model: ScriptedModel, request: ModelRequest) -> list[ModelEvent]:
    return [event async for event in model.stream(request)]


async def test_turns_are_played_in_order_of_the_conversation() -> None:
    model = ScriptedModel(["first", reply("second")], name="demo")
    start = conversation(Message.user("hi"))
    first = await model.complete(start)
    assert first.message.content == "first"
    assert first.model == "scripted:demo"
    assert first.finish_reason == "stop"
    later = conversation(Message.user("hi"), first.message, Message.user("and?"))
    assert (await model.complete(later)).message.content == "second"


async def test_the_turn_depends_on_the_request_not_on_how_many_calls_were_made() -> None:
    model = ScriptedModel(["first", "second"])
    start = conversation(Message.user("hi"))
    # The same request, asked again (a replay, a retry, another worker), gets the same answer.
    answers = [(await model.complete(start)).message.content for _ in range(3)]
    assert answers == ["first", "first", "first"]
    # And a fresh model object answers a later request as the first one would.
    later = conversation(Message.user("hi"), Message.assistant("first"), Message.user("more"))
    assert (await ScriptedModel(["first", "second"]).complete(later)).message.content == "second"


async def test_each_agent_has_its_own_script() -> None:
    model = ScriptedModel({"planner": ["plan: A then B"], "writer": ["A. B."]})
    thread = [Message.user("write it")]
    plan = await model.complete(conversation(*thread, agent="planner"))
    assert plan.message.author == "planner"
    # The planner's answer in the shared thread does not use up the writer's turns.
    thread.append(plan.message)
    written = await model.complete(conversation(*thread, agent="writer"))
    assert written.message.content == "A. B."
    assert written.message.author == "writer"


async def test_tool_calls_have_ids_from_the_request_and_json_arguments() -> None:
    model = ScriptedModel(
        [Turn("checking", (Call("lookup", {"order": "A-1", "all": True}), Call("raw", "{oops")))]
    )
    response = await model.complete(conversation(Message.user("where?"), agent="support"))
    assert response.tool_calls == [
        ToolCall(
            call_id="call_support_0_0",
            name="lookup",
            arguments=json.dumps({"all": True, "order": "A-1"}),
        ),
        ToolCall(call_id="call_support_0_1", name="raw", arguments="{oops"),
    ]
    assert response.finish_reason == "tool_calls"
    assert response.usage.input_tokens > 0
    assert response.usage.output_tokens > 0


async def test_rules_are_tried_before_the_script() -> None:
    def rules(request: ModelRequest) -> Turn | str | None:
        last = request.messages[-1].content
        return "pong" if last == "ping" else None

    model = ScriptedModel(["from the script"], rules=rules)
    assert (await model.complete(conversation(Message.user("ping")))).message.content == "pong"
    other = await model.complete(conversation(Message.user("other")))
    assert other.message.content == "from the script"


async def test_running_out_of_turns_fails_the_call() -> None:
    model = ScriptedModel({"writer": ["only one"]})
    request = conversation(Message.user("a"), Message.assistant("only one"), agent="writer")
    with pytest.raises(ModelCallFailed) as raised:
        await model.complete(request)
    assert "has no turn 2 for agent 'writer'" in raised.value.message
    assert raised.value.ids == {"model": "scripted:script", "agent": "writer"}
    with pytest.raises(ModelCallFailed, match="script has 0 turn"):
        await model.complete(conversation(Message.user("a"), agent="reviewer"))


async def test_the_default_model_says_it_is_scripted() -> None:
    model = ScriptedModel.default()
    answer = await model.complete(conversation(Message.user("What is 2+2?")))
    assert answer.message.content.startswith("[scripted model]")
    assert "What is 2+2?" in answer.message.content
    with_results = conversation(Message.user("?"), Message.tool("c1", "4"))
    answered = await model.complete(with_results)
    assert answered.message.content == "[scripted model] Based on the tools: 4"


async def test_stream_ends_with_what_complete_returns() -> None:
    model = ScriptedModel([reply("two words", Call("lookup", {"order": "A-1"}))])
    request = conversation(Message.user("go"), agent="a")
    events = await collect(model, request)
    assert events[:2] == [TextDelta(text="two"), TextDelta(text=" words")]
    assert events[2] == ToolCallDelta(call_id="call_a_0_0", name="lookup")
    assert events[3] == Completed(response=await model.complete(request))
