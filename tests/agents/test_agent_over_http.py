"""An agent on a model string, through the real SDKs and HTTP, to servers on 127.0.0.1."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import pytest

from corral import Corral
from corral.agents import Agent, AgentEvent, agent_events
from corral.models import Call
from corral.testing import (
    AnthropicCompatibleServer,
    OpenAICompatibleServer,
    ScriptItem,
    ServerFailure,
    ServerReply,
)
from corral.tools import tool

from .harness import run_error, steps_of


@tool
def lookup_order(order_id: str) -> dict[str, str]:
    """Find an order by id."""
    return {"order_id": order_id, "status": "shipped"}


@pytest.fixture(autouse=True)
def _settings(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    monkeypatch.chdir(tmp_path)  # no stray .env
    for name in ("OPENAI_API_KEY", "CORRAL_OPENAI_API_KEY", "ANTHROPIC_API_KEY"):
        monkeypatch.delenv(name, raising=False)
    monkeypatch.setenv("CORRAL_MODEL_TIMEOUT", "5")


async def test_openai_compatible_server_runs_the_tool_loop(
    corral: Corral, monkeypatch: pytest.MonkeyPatch
) -> None:
    script: list[ScriptItem] = [
        ServerFailure(429, "slow down"),  # the SDK retries once (CORRAL_MODEL_MAX_RETRIES=1)
        ServerReply(calls=[Call("lookup_order", {"order_id": "A-1"})]),
        ServerReply("A-1 has shipped.", input_tokens=30, output_tokens=5),
    ]
    with OpenAICompatibleServer(script) as server:
        monkeypatch.setenv("OPENAI_BASE_URL", server.base_url)
        monkeypatch.setenv("CORRAL_MODEL_MAX_RETRIES", "1")
        agent: Agent[Any] = Agent("support", model="openai:gpt-test", tools=[lookup_order])
        events: list[AgentEvent] = []
        try:
            with agent_events.listen(events.append):
                handle = await corral.start(agent, "Where is A-1?")
                await corral.run_until_idle()
        finally:
            await agent.aclose()
        assert await handle.wait_for_result() == "A-1 has shipped."
    assert await steps_of(corral, handle.run_id) == [
        ("model:support", "succeeded"),
        ("tool:lookup_order", "succeeded"),
        ("model:support", "succeeded"),
    ]
    last = json.loads((await corral.journal(handle.run_id))[2].result or "")
    assert last["model"] == "openai:gpt-test"
    assert last["usage"] == {"input_tokens": 30, "output_tokens": 5, "requests": 1}
    sent = server.requests[-1]
    assert sent["stream"] is True  # someone listened, so the model step streamed
    assert sent["tools"][0]["function"]["name"] == "lookup_order"
    assert sent["messages"][-1] == {
        "role": "tool",
        "tool_call_id": sent["messages"][-2]["tool_calls"][0]["id"],
        "content": '{"order_id": "A-1", "status": "shipped"}',
    }
    streamed = "".join(
        e.model_event.text for e in events if e.model_event and e.model_event.kind == "text"
    )
    assert streamed == "A-1 has shipped."


async def test_anthropic_server_and_a_rejected_key(
    corral: Corral, monkeypatch: pytest.MonkeyPatch
) -> None:
    with AnthropicCompatibleServer([ServerFailure(401, "invalid x-api-key")]) as server:
        monkeypatch.setenv("ANTHROPIC_BASE_URL", server.base_url)
        monkeypatch.setenv("ANTHROPIC_API_KEY", "wrong")
        monkeypatch.setenv("CORRAL_MODEL_MAX_RETRIES", "0")
        agent: Agent[Any] = Agent("support", model="anthropic:claude-test")
        try:
            handle = await corral.start(agent, "hello")
            await corral.run_until_idle()
        finally:
            await agent.aclose()
    assert await steps_of(corral, handle.run_id) == [("model:support", "failed")]
    error = await run_error(corral, handle.run_id)
    assert error["error_type"] == "ModelCallFailed"
    assert "ANTHROPIC_API_KEY" in error["error_message"]


async def test_a_failing_model_falls_back_to_the_next(
    corral: Corral, monkeypatch: pytest.MonkeyPatch
) -> None:
    from corral.models import ScriptedModel

    with OpenAICompatibleServer([ServerFailure(503, "overloaded")]) as server:
        monkeypatch.setenv("OPENAI_BASE_URL", server.base_url)
        monkeypatch.setenv("CORRAL_MODEL_MAX_RETRIES", "0")
        agent: Agent[Any] = Agent(
            "support",
            model="openai:gpt-test",
            fallback_models=[ScriptedModel(["A-1 has shipped (from the fallback)."])],
        )
        try:
            handle = await corral.start(agent, "Where is A-1?")
            await corral.run_until_idle()
        finally:
            await agent.aclose()
    assert await handle.wait_for_result() == "A-1 has shipped (from the fallback)."
    assert await steps_of(corral, handle.run_id) == [("model:support", "succeeded")]
    record = json.loads((await corral.journal(handle.run_id))[0].result or "")
    assert record["model"] == "scripted:script"  # the journal says which model answered
    assert len(server.requests) == 1


async def test_when_every_model_fails_the_last_error_is_journaled(
    corral: Corral, monkeypatch: pytest.MonkeyPatch
) -> None:
    with OpenAICompatibleServer([ServerFailure(503, "down"), ServerFailure(500, "also down")]) as (
        server
    ):
        monkeypatch.setenv("OPENAI_BASE_URL", server.base_url)
        monkeypatch.setenv("CORRAL_MODEL_MAX_RETRIES", "0")
        agent: Agent[Any] = Agent(
            "support", model="openai:gpt-a", fallback_models=["openai:gpt-b"], retry=None
        )
        try:
            handle = await corral.start(agent, "hi")
            await corral.run_until_idle()
        finally:
            await agent.aclose()
    error = await run_error(corral, handle.run_id)
    assert error["error_type"] == "ModelCallFailed"
    assert "openai:gpt-b" in error["error_message"]
    assert [r["model"] for r in server.requests] == ["gpt-a", "gpt-b"]
