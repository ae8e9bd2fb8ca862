"""The Anthropic client against a real HTTP server on 127.0.0.1, through the real SDK."""

from __future__ import annotations

import json
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
from corral.models.anthropic import AnthropicModel
from corral.testing import AnthropicCompatibleServer, RawBody, ServerFailure, ServerReply

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
async def anthropic_model(
    server: AnthropicCompatibleServer, *, max_retries: int = 0, max_tokens: int = 4096
) -> AsyncIterator[AnthropicModel]:
    model = AnthropicModel(
        "claude-test",
        api_key="test-key",
        base_url=server.base_url,
        timeout=5.0,
        max_retries=max_retries,
        max_tokens=max_tokens,
    )
    try:
        yield model
    finally:
        await model.aclose()


async def collect(model: AnthropicModel, request: ModelRequest) -> list[ModelEvent]:
    return [event async for event in model.stream(request)]


async def test_plain_text_answer_with_usage() -> None:
    script = [ServerReply("It shipped.", input_tokens=42, output_tokens=3)]
    with AnthropicCompatibleServer(script) as server:
        async with anthropic_model(server, max_tokens=256) as model:
            response = await model.complete(ask(agent="support"))
    assert model.name == "anthropic:claude-test"
    assert response.message == Message(role="assistant", content="It shipped.", author="support")
    assert response.usage == Usage(input_tokens=42, output_tokens=3)
    assert response.model == "anthropic:claude-test"
    assert response.finish_reason == "end_turn"
    [sent] = server.requests
    assert sent["model"] == "claude-test"
    assert sent["max_tokens"] == 256
    assert sent["system"] == "You help customers."
    assert sent["messages"] == [
        {"role": "user", "content": [{"type": "text", "text": "Where is my order?"}]}
    ]
    assert "tools" not in sent


async def test_several_tool_calls_in_one_response() -> None:
    reply = ServerReply(
        "Looking.", calls=[Call("lookup", {"order": "A-1"}), Call("lookup", {"order": "B-2"})]
    )
    with AnthropicCompatibleServer([reply]) as server:
        async with anthropic_model(server) as model:
            response = await model.complete(ask(tools=[LOOKUP]))
    assert response.message.content == "Looking."
    assert response.tool_calls == [
        ToolCall(call_id="toolu_1_1", name="lookup", arguments='{"order": "A-1"}'),
        ToolCall(call_id="toolu_1_2", name="lookup", arguments='{"order": "B-2"}'),
    ]
    assert response.finish_reason == "tool_use"
    assert server.requests[0]["tools"] == [
        {"name": "lookup", "description": "Find an order.", "input_schema": LOOKUP.parameters}
    ]


async def test_text_blocks_are_joined_and_cache_tokens_count_as_input() -> None:
    body = {
        "id": "msg_1",
        "type": "message",
        "role": "assistant",
        "model": "claude-test",
        "content": [
            {"type": "thinking", "thinking": "hmm", "signature": "s"},
            {"type": "text", "text": "It shipped "},
            {"type": "text", "text": "yesterday."},
        ],
        "stop_reason": "end_turn",
        "stop_sequence": None,
        "usage": {
            "input_tokens": 5,
            "cache_creation_input_tokens": 100,
            "cache_read_input_tokens": 1000,
            "output_tokens": 9,
        },
    }
    with AnthropicCompatibleServer([RawBody(body)]) as server:
        async with anthropic_model(server) as model:
            response = await model.complete(ask())
    assert response.message.content == "It shipped yesterday."
    assert response.usage == Usage(input_tokens=1105, output_tokens=9)


async def test_conversation_with_tool_calls_and_results_is_translated() -> None:
    calls = [
        ToolCall(call_id="t1", name="lookup", arguments='{"order": "A-1"}'),
        ToolCall(call_id="t2", name="lookup", arguments='{"order": "B-'),  # malformed JSON
    ]
    request = ModelRequest(
        instructions="You help customers.",
        messages=[
            Message(role="system", content="Be brief."),
            Message.user("Where are A-1 and B-2?"),
            Message(role="assistant", content="Looking.", tool_calls=calls, author="support"),
            Message.tool("t1", "shipped"),
            Message.tool("t2", "error: arguments are not valid JSON"),
            Message.user("Hurry please."),
        ],
        tools=[LOOKUP],
        agent="support",
    )
    with AnthropicCompatibleServer(["A-1 shipped."]) as server:
        async with anthropic_model(server) as model:
            await model.complete(request)
    sent = server.requests[0]
    assert sent["system"] == "You help customers.\n\nBe brief."
    assert sent["messages"] == [
        {"role": "user", "content": [{"type": "text", "text": "Where are A-1 and B-2?"}]},
        {
            "role": "assistant",
            "content": [
                {"type": "text", "text": "Looking."},
                {"type": "tool_use", "id": "t1", "name": "lookup", "input": {"order": "A-1"}},
                {"type": "tool_use", "id": "t2", "name": "lookup", "input": {}},
            ],
        },
        # Consecutive tool results and the next user text share one user message.
        {
            "role": "user",
            "content": [
                {"type": "tool_result", "tool_use_id": "t1", "content": "shipped"},
                {
                    "type": "tool_result",
                    "tool_use_id": "t2",
                    "content": "error: arguments are not valid JSON",
                },
                {"type": "text", "text": "Hurry please."},
            ],
        },
    ]


async def test_output_schema_is_described_in_the_system_prompt() -> None:
    with AnthropicCompatibleServer(['{"total": 3}']) as server:
        async with anthropic_model(server) as model:
            response = await model.complete(ask(output_schema=SCHEMA))
    assert response.message.content == '{"total": 3}'
    system = server.requests[0]["system"]
    assert system.startswith("You help customers.")
    assert json.dumps(SCHEMA, sort_keys=True) in system


async def test_stream_yields_deltas_and_ends_with_what_complete_returns() -> None:
    reply = ServerReply(
        "Let me look both up.",
        calls=[Call("lookup", {"order": "A-1"}), Call("lookup", {"order": "B-2"})],
        input_tokens=30,
        output_tokens=12,
    )
    with AnthropicCompatibleServer([reply, reply]) as server:
        async with anthropic_model(server) as model:
            completed = await model.complete(ask(tools=[LOOKUP], agent="support"))
            events = await collect(model, ask(tools=[LOOKUP], agent="support"))
    texts = [event.text for event in events if isinstance(event, TextDelta)]
    assert texts == ["Let", " me", " look", " both", " up."]
    assert [event for event in events if isinstance(event, ToolCallDelta)] == [
        ToolCallDelta(call_id="toolu_2_1", name="lookup"),
        ToolCallDelta(call_id="toolu_2_2", name="lookup"),
    ]
    final = events[-1]
    assert isinstance(final, Completed)
    assert final.response.usage == Usage(input_tokens=30, output_tokens=12)
    renumbered = [
        call.model_copy(update={"call_id": call.call_id.replace("_1_", "_2_")})
        for call in completed.tool_calls
    ]
    expected = completed.model_copy(
        update={"message": completed.message.model_copy(update={"tool_calls": renumbered})}
    )
    assert final.response == expected
    assert server.requests[1]["stream"] is True


async def test_stream_of_plain_text_equals_complete() -> None:
    with AnthropicCompatibleServer(["Hello there.", "Hello there."]) as server:
        async with anthropic_model(server) as model:
            completed = await model.complete(ask())
            events = await collect(model, ask())
    assert events[-1] == Completed(response=completed)


@pytest.mark.parametrize(
    ("status", "retryable"),
    [(400, False), (404, False), (429, True), (500, True), (529, True)],
)
async def test_http_errors_become_model_call_failed(status: int, retryable: bool) -> None:
    with AnthropicCompatibleServer([ServerFailure(status, "no luck", retry_after=7)]) as server:
        async with anthropic_model(server) as model:
            with pytest.raises(ModelCallFailed) as raised:
                await model.complete(ask())
    error = raised.value
    assert error.ids == {
        "model": "anthropic:claude-test",
        "url": server.base_url,
        "status": status,
        "retryable": retryable,
        "retry_after": 7.0,  # the server's Retry-After, for the model step's retry policy
    }
    assert "anthropic:claude-test" in error.message
    assert server.base_url in error.message
    assert f"HTTP {status}: no luck" in error.message
    assert len(server.requests) == 1


async def test_rate_limit_then_reply_succeeds_when_the_sdk_retries() -> None:
    with AnthropicCompatibleServer([ServerFailure(429, retry_after=0), "Finally."]) as server:
        async with anthropic_model(server, max_retries=1) as model:
            response = await model.complete(ask())
    assert response.message.content == "Finally."
    assert len(server.requests) == 2


async def test_rate_limit_in_a_stream_becomes_model_call_failed() -> None:
    with AnthropicCompatibleServer([ServerFailure(429)]) as server:
        async with anthropic_model(server) as model:
            with pytest.raises(ModelCallFailed) as raised:
                await collect(model, ask())
    assert raised.value.ids["status"] == 429
    assert raised.value.ids["retryable"] is True


async def test_rejected_key_names_the_setting() -> None:
    with AnthropicCompatibleServer([ServerFailure(401, "invalid x-api-key")]) as server:
        async with anthropic_model(server, max_retries=2) as model:
            with pytest.raises(ModelCallFailed) as raised:
                await model.complete(ask())
    assert "the API key was rejected" in raised.value.message
    assert "ANTHROPIC_API_KEY" in raised.value.message
    assert raised.value.ids["retryable"] is False
    assert len(server.requests) == 1


@pytest.mark.parametrize(
    ("body", "problem"),
    [
        (RawBody("this is not JSON"), "JSONDecodeError"),
        (RawBody({"id": "msg_1", "type": "message", "role": "assistant"}), "no content"),
        (RawBody("<html>bad gateway</html>", content_type="text/html"), "no content"),
    ],
)
async def test_malformed_responses_become_model_call_failed(body: RawBody, problem: str) -> None:
    with AnthropicCompatibleServer([body]) as server:
        async with anthropic_model(server) as model:
            with pytest.raises(ModelCallFailed) as raised:
                await model.complete(ask())
    assert "malformed response" in raised.value.message
    assert problem in raised.value.message
    assert raised.value.ids["retryable"] is False


@pytest.mark.parametrize(
    "stream",
    [
        "event: message_start\ndata: {not json\n\n",
        # Events out of order: a delta before the message started.
        'event: content_block_delta\ndata: {"type": "content_block_delta", "index": 0, '
        '"delta": {"type": "text_delta", "text": "hi"}}\n\nevent: message_stop\n'
        'data: {"type": "message_stop"}\n\n',
        # Cut short: the message started and never stopped.
        'event: message_start\ndata: {"type": "message_start", "message": {"id": "m", '
        '"type": "message", "role": "assistant", "model": "claude-test", "content": [], '
        '"stop_reason": null, "usage": {"input_tokens": 1, "output_tokens": 1}}}\n\n',
    ],
)
async def test_malformed_stream_becomes_model_call_failed(stream: str) -> None:
    body = RawBody(stream, content_type="text/event-stream")
    with AnthropicCompatibleServer([body]) as server:
        async with anthropic_model(server) as model:
            with pytest.raises(ModelCallFailed, match="malformed response"):
                await collect(model, ask())


async def test_non_loopback_server_is_forbidden_before_sending() -> None:
    model = AnthropicModel("claude-test", api_key="k", base_url="http://192.0.2.1:9")
    try:
        with pytest.raises(ModelRequestsForbidden) as raised:
            await model.complete(ask())
        with pytest.raises(ModelRequestsForbidden):
            await collect(model, ask())
    finally:
        await model.aclose()
    assert raised.value.ids == {"model": "anthropic:claude-test", "url": "http://192.0.2.1:9"}


async def test_default_server_is_anthropic_and_forbidden_here(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    monkeypatch.delenv("ANTHROPIC_BASE_URL", raising=False)
    model = AnthropicModel("claude-test", api_key="k")
    try:
        assert model.base_url == "https://api.anthropic.com"
        with pytest.raises(ModelRequestsForbidden, match=r"api\.anthropic\.com"):
            await model.complete(ask())
    finally:
        await model.aclose()


def test_an_empty_key_is_not_configured() -> None:
    with pytest.raises(ModelNotConfigured, match="ANTHROPIC_API_KEY"):
        AnthropicModel("claude-test", api_key="")


def test_server_rejects_tool_input_that_is_not_json() -> None:
    with pytest.raises(ValueError, match="must be JSON"):
        AnthropicCompatibleServer([ServerReply(calls=[Call("lookup", "{oops")])])
