"""Agents under the reliability layer: retries honouring Retry-After, breakers that send calls
to a fallback, tool timeouts, step limits, run deadlines and escalation to a human.

Virtual time throughout (the `corral` fixture's `FakeClock`); models over HTTP use the real
SDK against a server on 127.0.0.1.
"""

from __future__ import annotations

import asyncio
import json
from pathlib import Path
from typing import Any

import pytest

from corral import Corral
from corral.agents import Agent, Escalation
from corral.errors import AgentDefinitionError, ModelCallFailed, RetryStep
from corral.governance import approvals
from corral.models import Call, Model, ModelRequest, ModelResponse, ScriptedModel, reply
from corral.reliability import BreakerConfig, RetryPolicy, dependencies_for
from corral.testing import (
    FakeClock,
    OpenAICompatibleServer,
    ScriptItem,
    ServerFailure,
    ServerReply,
)
from corral.tools import ToolContext, tool

from .harness import add_approver, run_error, steps_of


class Outage(Model):
    """A model endpoint that is down: every call fails as a 503 would, and is counted."""

    def __init__(self, name: str = "test:primary") -> None:
        self.name = name
        self.calls = 0
        self.healthy = False
        self.answer = "from the primary"

    async def complete(self, request: ModelRequest) -> ModelResponse:
        self.calls += 1
        if not self.healthy:
            raise ModelCallFailed(
                f"model {self.name!r} failed: HTTP 503 (retryable)",
                model=self.name,
                url=None,
                status=503,
                retryable=True,
            )
        return await ScriptedModel([self.answer]).complete(request)


class Recording(Model):
    """A scripted model that keeps every request it was sent (what the agent was told)."""

    def __init__(self, script: list[Any]) -> None:
        self.inner = ScriptedModel(script)
        self.name = self.inner.name
        self.requests: list[ModelRequest] = []

    async def complete(self, request: ModelRequest) -> ModelResponse:
        self.requests.append(request)
        return await self.inner.complete(request)


@pytest.fixture(autouse=True)
def _settings(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    monkeypatch.chdir(tmp_path)
    monkeypatch.setenv("CORRAL_MODEL_TIMEOUT", "5")


async def test_a_429_is_retried_after_its_retry_after_as_a_durable_timer(
    corral: Corral, clock: FakeClock, monkeypatch: pytest.MonkeyPatch
) -> None:
    script: list[ScriptItem] = [
        ServerFailure(429, "slow down", retry_after=7),
        ServerReply("Hello."),
    ]
    with OpenAICompatibleServer(script) as server:
        monkeypatch.setenv("OPENAI_BASE_URL", server.base_url)
        agent: Agent[Any] = Agent("greeter", model="openai:gpt-test", retry=RetryPolicy(jitter=0))
        try:
            handle = await corral.start(agent, "hi")
            assert (await corral.run_until_idle()).outcomes == {"waiting": 1}
            assert (await handle.get()).wake_at == pytest.approx(clock.now() + 7)
            [row] = await corral.journal(handle.run_id)
            [attempt] = json.loads(row.detail or "{}")["attempts"]
            assert attempt["code"] == "model_call_failed"
            assert "HTTP 429" in attempt["error"]
            clock.advance(7)
            await corral.run_until_idle()
        finally:
            await agent.aclose()
        assert await handle.wait_for_result(timeout=5) == "Hello."
        assert len(server.requests) == 2
    assert await steps_of(corral, handle.run_id) == [("model:greeter", "succeeded")]


async def test_an_open_circuit_sends_calls_to_the_fallback_until_it_recovers(
    corral: Corral, clock: FakeClock
) -> None:
    primary = Outage()
    breaker = BreakerConfig(failure_rate=0.5, window=60, min_calls=2, open_for=30)

    agent: Agent[Any] = Agent(
        "support",
        model=primary,
        fallback_models=[ScriptedModel(["from the fallback"])],
        breaker=breaker,
    )

    async def ask() -> tuple[str, list[str]]:
        handle = await corral.start(agent, "hi")
        await corral.run_until_idle()
        answer = await handle.wait_for_result(timeout=5)
        [model_step] = await corral.journal(handle.run_id)
        return answer, json.loads(model_step.result or "{}")["fallbacks"]

    assert await ask() == ("from the fallback", ["test:primary: model_call_failed"])
    assert await ask() == ("from the fallback", ["test:primary: model_call_failed"])
    assert primary.calls == 2  # two failures of two calls: the circuit opens
    assert await ask() == ("from the fallback", ["test:primary: circuit_open"])
    assert primary.calls == 2  # refused without a call

    primary.healthy = True
    clock.advance(30)  # half-open: the next calls are probes
    for _ in range(breaker.half_open_probes):
        assert await ask() == ("from the primary", [])
    deps = dependencies_for(corral.store, clock)
    [snapshot] = [s for s in deps.snapshots() if s.key == "test:primary"]
    assert snapshot.state == "closed"
    await deps.flush()


async def test_a_hanging_tool_is_abandoned_and_the_model_is_told(
    corral: Corral, clock: FakeClock
) -> None:
    started = asyncio.Event()

    @tool
    async def slow_lookup(order_id: str) -> str:
        """Look an order up in a system that does not answer."""
        started.set()
        await asyncio.Event().wait()
        return "never"

    model = Recording(
        [reply("", Call("slow_lookup", {"order_id": "A-1"})), "The order system is not answering."]
    )
    agent = Agent("support", model=model, tools=[slow_lookup], tool_timeout=10, retry=None)
    handle = await corral.start(agent, "Where is A-1?")
    worker = asyncio.create_task(corral.run_until_idle())
    await asyncio.wait_for(started.wait(), 5)
    clock.advance(10)
    await asyncio.wait_for(worker, 5)
    assert await handle.wait_for_result(timeout=5) == "The order system is not answering."
    journal = await corral.journal(handle.run_id)
    tool_step = journal[1]
    assert (tool_step.name, tool_step.status) == ("tool:slow_lookup", "failed")
    error = json.loads(tool_step.error or "{}")
    assert "StepTimeout" in error["type"] or "did not answer within 10s" in error["message"]
    told = model.requests[-1].messages[-1].content
    assert "did not answer within 10s" in told


async def test_a_passing_tool_failure_is_retried_with_the_same_key(
    corral: Corral, clock: FakeClock
) -> None:
    keys: list[str] = []

    @tool(retry=RetryPolicy(initial_delay=2, jitter=0))
    async def refund(order_id: str, ctx: ToolContext) -> str:
        """Refund an order."""
        keys.append(ctx.idempotency_key)
        if len(keys) == 1:
            raise RetryStep("the payments API answered 503")
        return "refunded"

    model = Recording([reply("", Call("refund", {"order_id": "A-1"})), "Done."])
    handle = await corral.start(Agent("support", model=model, tools=[refund]), "Refund A-1")
    assert (await corral.run_until_idle()).outcomes == {"waiting": 1}
    clock.advance(2)
    await corral.run_until_idle()
    assert await handle.wait_for_result(timeout=5) == "Done."
    assert keys == [f"{handle.run_id}:2", f"{handle.run_id}:2"]
    detail = json.loads((await corral.journal(handle.run_id))[1].detail or "{}")
    assert detail["input"]["tool"] == "refund"  # the call, journaled for search and replay
    assert detail["input"]["arguments"] == {"order_id": "A-1"}
    assert len(detail["attempts"]) == 1
    assert model.requests[-1].messages[-1].content == "refunded"


async def test_max_steps_stops_a_runaway_loop(corral: Corral) -> None:
    @tool
    def search(query: str) -> str:
        """Search the knowledge base."""
        return "nothing"

    model = ScriptedModel(
        [reply("", Call("search", {"query": f"try {n}"})) for n in range(10)] + ["never"]
    )
    agent = Agent("support", model=model, tools=[search], max_steps=5)
    handle = await corral.start(agent, "find it")
    await corral.run_until_idle()
    error = await run_error(corral, handle.run_id)
    assert error["code"] == "step_limit"
    assert error["max_steps"] == 5
    assert (await steps_of(corral, handle.run_id))[-1] == ("agent.failed:support", "failed")


async def test_an_agent_timeout_is_the_runs_deadline(corral: Corral, clock: FakeClock) -> None:
    @tool
    async def send_reply(text: str, ctx: ToolContext) -> str:
        """Send a reply (a person must check it first)."""
        from corral.errors import ApprovalRequired

        if ctx.approved_by is None:
            raise ApprovalRequired("check it", approvers=["quality"])
        return "sent"

    model = ScriptedModel([reply("", Call("send_reply", {"text": "hi"})), "sent"])
    agent = Agent("replier", model=model, tools=[send_reply], timeout=600)
    handle = await corral.start(agent, "reply")
    await corral.run_until_idle()
    run = await handle.get()
    assert (run.status, run.wake_at) == ("waiting", run.created_at + 600)
    clock.advance(600)
    await corral.run_until_idle()
    assert (await run_error(corral, handle.run_id))["code"] == "deadline_exceeded"


async def test_ask_human_waits_for_a_persons_answer(corral: Corral) -> None:
    await add_approver(corral, "lee", "support-leads")
    model = Recording(
        [
            reply("", Call("ask_human", {"question": "May I waive the $30 fee for A-1?"})),
            "The fee is waived.",
        ]
    )
    agent = Agent("support", model=model, escalation=Escalation(to=["support-leads"]))
    handle = await corral.start(agent, "Waive my fee")
    await corral.run_until_idle()
    assert (await handle.get()).status == "waiting"
    (pending,) = await corral.store.read_script(
        lambda d: approvals.list_approvals(corral.tenant, status="pending")
    )
    assert (pending.tool, pending.reason) == ("ask_human", "May I waive the $30 fee for A-1?")
    assert pending.deadline == pending.created_at + 3600
    await approvals.decide(
        corral, pending.approval_id, approve=True, principal="lee", reason="yes, once"
    )
    await corral.run_until_idle()
    assert await handle.wait_for_result(timeout=5) == "The fee is waived."
    assert model.requests[-1].messages[-1].content == "lee answered: yes, once"


async def test_an_unanswered_question_tells_the_agent_at_the_deadline(
    corral: Corral, clock: FakeClock
) -> None:
    model = Recording(
        [reply("", Call("ask_human", {"question": "Is this fraud?"})), "I could not ask."]
    )
    agent = Agent("support", model=model, escalation=Escalation(to=["risk"], deadline=60))
    handle = await corral.start(agent, "check")
    await corral.run_until_idle()
    clock.advance(60)
    await corral.run_until_idle()
    assert await handle.wait_for_result(timeout=5) == "I could not ask."
    assert "ApprovalRejected" in model.requests[-1].messages[-1].content


async def test_a_policy_can_set_a_shorter_timeout_for_a_tool(
    corral: Corral, clock: FakeClock
) -> None:
    from corral.governance.policy_store import apply_policy

    await apply_policy(
        corral.store,
        corral.tenant,
        """
name: timeouts
rules:
  - name: lookups-are-quick
    match: {tools: [slow_lookup]}
    effect: allow
    timeout: 5s
""",
        source="timeouts.yaml",
        actor="human:test",
        now=clock.now(),
    )
    started = asyncio.Event()

    @tool
    async def slow_lookup(order_id: str) -> str:
        """Look an order up in a system that does not answer."""
        started.set()
        await asyncio.Event().wait()
        return "never"

    model = Recording([reply("", Call("slow_lookup", {"order_id": "A-1"})), "gave up"])
    agent = Agent("support", model=model, tools=[slow_lookup], tool_timeout=60, retry=None)
    handle = await corral.start(agent, "Where is A-1?")
    worker = asyncio.create_task(corral.run_until_idle())
    await asyncio.wait_for(started.wait(), 5)
    clock.advance(5)  # the policy's 5 s, not the agent's 60 s
    await asyncio.wait_for(worker, 5)
    assert await handle.wait_for_result(timeout=5) == "gave up"
    assert "did not answer within 5s" in model.requests[-1].messages[-1].content


@pytest.mark.parametrize(
    ("option", "value"),
    [("model_timeout", 0), ("tool_timeout", -1), ("timeout", 0), ("max_steps", 0)],
)
def test_a_bad_limit_is_refused_naming_the_option(option: str, value: float) -> None:
    options: dict[str, Any] = {option: value}
    with pytest.raises(AgentDefinitionError) as refused:
        Agent("support", **options)
    assert f"{option} must be a positive number" in refused.value.message


def test_an_escalation_needs_someone_to_ask() -> None:
    with pytest.raises(AgentDefinitionError, match="at least one approver group"):
        Escalation(to=[])
    with pytest.raises(AgentDefinitionError, match="deadline must be positive"):
        Escalation(to=["leads"], deadline=0)
