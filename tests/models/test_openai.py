"""The OpenAI client against a real HTTP server on 127.0.0.1, through the real `openai` SDK."""

from __future__ import annotations

import json
import socket
import threading
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager

import pytest

from corral.errors import ModelCallFailed, ModelNotConfigured, ModelRequestsForbidden
from corral.models import (
    Call,
    Completed,
    Message,
    ModelEvent,
    ModelRequest,
    TextDelta,
    ToolCall,
    ToolCallDelta,
    ToolSpec,
    Usage,
)
from corral.models.openai import OpenAIModel
from corral.testing import OpenAICompatibleServer, RawBody, ServerFailure, ServerReply

LOOKUP = ToolSpec(
    name="lookup",
    description="Find an order.",
    parameters={"type": "object", "properties": {"order": {"type": "string"}}},
)
SCHEMA = {"type": "object", "properties": {"total": {"type": "number"}}, "required": ["total"]}


def ask(text: str = "Where is my order?", **fields: object) -> ModelRequest:
    return ModelRequest.model_validate(
        {"instructions": "You help customers.", "messages": [Message.user(text)], **fields}
    )


@asynccontextmanager
async def openai_model(
    server: OpenAICompatibleServer, *, max_retries: int = 0
) -> AsyncIterator[OpenAIModel]:
    model = OpenAIModel(
        "gpt-test",
        api_key="test-key",
        base_url=server.base_url,
        timeout=5.0,
        max_retries=max_retries,
    )
    try:
        yield model
    finally:
        await model.aclose()


async def collect(model: OpenAIModel, request: ModelRequest) -> list[ModelEvent]:
    return [event async for event in model.stream(request)]


async def test_plain_text_answer_with_usage() -> None:
    script = [ServerReply("It shipped.", input_tokens=42, output_tokens=3)]
    with OpenAICompatibleServer(script) as server:
        async with openai_model(server) as model:
            response = await model.complete(ask(agent="support"))
    assert model.name == "openai:gpt-test"
    assert response.message == Message(role="assistant", content="It shipped.", author="support")
    assert response.usage == Usage(input_tokens=42, output_tokens=3)
    assert response.model == "openai:gpt-test"
    assert response.finish_reason == "stop"
    [sent] = server.requests
    assert sent["model"] == "gpt-test"
    assert sent["messages"] == [
        {"role": "system", "content": "You help customers."},
        {"role": "user", "content": "Where is my order?"},
    ]
    assert "tools" not in sent
    assert "response_format" not in sent
    assert "stream" not in sent


async def test_several_tool_calls_in_one_response() -> None:
    calls = [Call("lookup", {"order": "A-1"}), Call("lookup", {"order": "B-2"})]
    with OpenAICompatibleServer([ServerReply(calls=calls)]) as server:
        async with openai_model(server) as model:
            response = await model.complete(ask(tools=[LOOKUP]))
    assert response.message.content == ""
    assert response.tool_calls == [
        ToolCall(call_id="call_1_1", name="lookup", arguments='{"order": "A-1"}'),
        ToolCall(call_id="call_1_2", name="lookup", arguments='{"order": "B-2"}'),
    ]
    assert response.finish_reason == "tool_calls"
    assert server.requests[0]["tools"] == [
        {
            "type": "function",
            "function": {
                "name": "lookup",
                "description": "Find an order.",
                "parameters": LOOKUP.parameters,
            },
        }
    ]


async def test_invalid_json_arguments_are_passed_through_as_text() -> None:
    script = [ServerReply(calls=[Call("lookup", '{"order": "A-')])]
    with OpenAICompatibleServer(script) as server:
        async with openai_model(server) as model:
            response = await model.complete(ask(tools=[LOOKUP]))
    assert response.tool_calls[0].arguments == '{"order": "A-'


async def test_conversation_with_tool_calls_and_results_is_translated() -> None:
    calls = [ToolCall(call_id="c1", name="lookup", arguments='{"order": "A-1"}')]
    request = ModelRequest(
        instructions="You help customers.",
        messages=[
            Message.user("Where is A-1?"),
            Message(role="assistant", content="", tool_calls=calls, author="support"),
            Message.tool("c1", "shipped"),
            Message.assistant("It shipped.", author="support"),
            Message.user("Thanks"),
        ],
        tools=[LOOKUP],
        agent="support",
    )
    with OpenAICompatibleServer(["You're welcome."]) as server:
        async with openai_model(server) as model:
            await model.complete(request)
    assert server.requests[0]["messages"] == [
        {"role": "system", "content": "You help customers."},
        {"role": "user", "content": "Where is A-1?"},
        {
            "role": "assistant",
            "content": None,
            "tool_calls": [
                {
                    "id": "c1",
                    "type": "function",
                    "function": {"name": "lookup", "arguments": '{"order": "A-1"}'},
                }
            ],
        },
        {"role": "tool", "content": "shipped", "tool_call_id": "c1"},
        # `author` is Corral's own: it is not sent as `name`.
        {"role": "assistant", "content": "It shipped."},
        {"role": "user", "content": "Thanks"},
    ]


async def test_output_schema_without_tools_is_a_json_schema_response_format() -> None:
    with OpenAICompatibleServer(['{"total": 3}']) as server:
        async with openai_model(server) as model:
            response = await model.complete(ask(output_schema=SCHEMA))
    assert response.message.content == '{"total": 3}'
    sent = server.requests[0]
    assert sent["response_format"] == {
        "type": "json_schema",
        "json_schema": {"name": "output", "schema": SCHEMA},
    }
    assert len(sent["messages"]) == 2


async def test_output_schema_with_tools_is_described_in_a_system_message() -> None:
    with OpenAICompatibleServer(['{"total": 3}']) as server:
        async with openai_model(server) as model:
            await model.complete(ask(output_schema=SCHEMA, tools=[LOOKUP]))
    sent = server.requests[0]
    assert "response_format" not in sent
    note = sent["messages"][1]
    assert note["role"] == "system"
    assert json.dumps(SCHEMA, sort_keys=True) in note["content"]


async def test_stream_yields_deltas_and_ends_with_what_complete_returns() -> None:
    reply = ServerReply(
        "Let me look both up.",
        calls=[Call("lookup", {"order": "A-1"}), Call("lookup", {"order": "B-2"})],
        input_tokens=30,
        output_tokens=12,
    )
    with OpenAICompatibleServer([reply, reply]) as server:
        async with openai_model(server) as model:
            completed = await model.complete(ask(tools=[LOOKUP]))
            events = await collect(model, ask(tools=[LOOKUP]))
    texts = [event.text for event in events if isinstance(event, TextDelta)]
    assert texts == ["Let", " me", " look", " both", " up."]
    assert [event for event in events if isinstance(event, ToolCallDelta)] == [
        ToolCallDelta(call_id="call_2_1", name="lookup"),
        ToolCallDelta(call_id="call_2_2", name="lookup"),
    ]
    # Argument fragments were put back together; ids differ only by the request number.
    final = events[-1]
    assert isinstance(final, Completed)
    assert final.response.usage == Usage(input_tokens=30, output_tokens=12)
    expected = completed.model_copy(
        update={
            "message": completed.message.model_copy(
                update={
                    "tool_calls": [
                        call.model_copy(update={"call_id": call.call_id.replace("_1_", "_2_")})
                        for call in completed.tool_calls
                    ]
                }
            )
        }
    )
    assert final.response == expected
    streamed = server.requests[1]
    assert streamed["stream"] is True
    assert streamed["stream_options"] == {"include_usage": True}


async def test_stream_of_plain_text_equals_complete() -> None:
    with OpenAICompatibleServer(["Hello there.", "Hello there."]) as server:
        async with openai_model(server) as model:
            completed = await model.complete(ask(agent="a"))
            events = await collect(model, ask(agent="a"))
    assert events[-1] == Completed(response=completed)


@pytest.mark.parametrize(
    ("status", "retryable"),
    [(400, False), (404, False), (429, True), (500, True), (503, True)],
)
async def test_http_errors_become_model_call_failed(status: int, retryable: bool) -> None:
    with OpenAICompatibleServer([ServerFailure(status, "no luck", retry_after=7)]) as server:
        async with openai_model(server) as model:
            with pytest.raises(ModelCallFailed) as raised:
                await model.complete(ask())
    error = raised.value
    assert error.ids == {
        "model": "openai:gpt-test",
        "url": server.base_url,
        "status": status,
        "retryable": retryable,
        "retry_after": 7.0,  # the server's Retry-After, for the model step's retry policy
    }
    assert "openai:gpt-test" in error.message
    assert server.base_url in error.message
    assert f"HTTP {status}: no luck" in error.message
    assert len(server.requests) == 1  # max_retries=0: the SDK did not retry


async def test_rate_limit_then_reply_succeeds_when_the_sdk_retries() -> None:
    with OpenAICompatibleServer([ServerFailure(429, retry_after=0), "Finally."]) as server:
        async with openai_model(server, max_retries=1) as model:
            response = await model.complete(ask())
    assert response.message.content == "Finally."
    assert len(server.requests) == 2


async def test_rate_limit_in_a_stream_becomes_model_call_failed() -> None:
    with OpenAICompatibleServer([ServerFailure(429)]) as server:
        async with openai_model(server) as model:
            with pytest.raises(ModelCallFailed) as raised:
                await collect(model, ask())
    assert raised.value.ids["retryable"] is True


async def test_rejected_key_names_the_setting() -> None:
    with OpenAICompatibleServer([ServerFailure(401, "Incorrect API key")]) as server:
        async with openai_model(server, max_retries=2) as model:
            with pytest.raises(ModelCallFailed) as raised:
                await model.complete(ask())
    assert "the API key was rejected" in raised.value.message
    assert "OPENAI_API_KEY" in raised.value.message
    assert raised.value.ids["retryable"] is False
    assert len(server.requests) == 1  # a 401 is not retried


async def test_unreachable_server_is_a_retryable_failure() -> None:
    with socket.socket() as probe:  # a loopback port nothing listens on
        probe.bind(("127.0.0.1", 0))
        port = probe.getsockname()[1]
    model = OpenAIModel(
        "gpt-test", api_key="k", base_url=f"http://127.0.0.1:{port}/v1", timeout=5.0, max_retries=0
    )
    try:
        with pytest.raises(ModelCallFailed) as raised:
            await model.complete(ask())
    finally:
        await model.aclose()
    assert raised.value.ids["status"] is None
    assert raised.value.ids["retryable"] is True
    assert f"127.0.0.1:{port}" in raised.value.message


@pytest.mark.parametrize(
    ("body", "problem"),
    [
        (RawBody("this is not JSON"), "JSONDecodeError"),
        (RawBody({"id": "x", "object": "chat.completion", "choices": []}), "no choices"),
        (RawBody("<html>bad gateway</html>", content_type="text/html"), "no choices"),
        (
            RawBody(
                {
                    "choices": [
                        {
                            "index": 0,
                            "finish_reason": "tool_calls",
                            "message": {
                                "role": "assistant",
                                "tool_calls": [
                                    {
                                        "id": "c1",
                                        "type": "function",
                                        "function": {"name": "lookup", "arguments": {"a": 1}},
                                    }
                                ],
                            },
                        }
                    ]
                }
            ),
            "not JSON text",
        ),
    ],
)
async def test_malformed_responses_become_model_call_failed(body: RawBody, problem: str) -> None:
    with OpenAICompatibleServer([body]) as server:
        async with openai_model(server) as model:
            with pytest.raises(ModelCallFailed) as raised:
                await model.complete(ask())
    assert "malformed response" in raised.value.message
    assert problem in raised.value.message
    assert raised.value.ids["retryable"] is False


async def test_malformed_stream_becomes_model_call_failed() -> None:
    body = RawBody("data: {not json\n\n", content_type="text/event-stream")
    with OpenAICompatibleServer([body]) as server:
        async with openai_model(server) as model:
            with pytest.raises(ModelCallFailed, match="malformed response"):
                await collect(model, ask())


async def test_non_loopback_server_is_forbidden_before_sending() -> None:
    # tests/conftest.py switches network model requests off for the whole suite.
    model = OpenAIModel("gpt-test", api_key="k", base_url="http://192.0.2.1:9/v1", max_retries=0)
    try:
        with pytest.raises(ModelRequestsForbidden) as raised:
            await model.complete(ask())
        with pytest.raises(ModelRequestsForbidden):
            await collect(model, ask())
    finally:
        await model.aclose()
    assert raised.value.ids == {"model": "openai:gpt-test", "url": "http://192.0.2.1:9/v1"}


async def test_default_server_is_openai_and_forbidden_here(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv("OPENAI_BASE_URL", raising=False)
    model = OpenAIModel("gpt-test", api_key="k")
    try:
        assert model.base_url == "https://api.openai.com/v1"
        with pytest.raises(ModelRequestsForbidden, match=r"api\.openai\.com"):
            await model.complete(ask())
    finally:
        await model.aclose()


def test_an_empty_key_is_not_configured() -> None:
    with pytest.raises(ModelNotConfigured, match="OPENAI_API_KEY"):
        OpenAIModel("gpt-test", api_key="")


async def test_server_answers_beyond_its_script_with_a_clear_400() -> None:
    with OpenAICompatibleServer([]) as server:
        async with openai_model(server) as model:
            with pytest.raises(ModelCallFailed, match="request 1 has no response"):
                await model.complete(ask())


def test_server_stops_its_thread_on_exit() -> None:
    with OpenAICompatibleServer(["hi"]) as server:
        name = f"OpenAICompatibleServer:{server.url.rsplit(':', 1)[1]}"
        assert any(thread.name == name for thread in threading.enumerate())
    assert not any(thread.name == name for thread in threading.enumerate())
