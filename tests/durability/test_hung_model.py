"""A hung model call never blocks the other runs of its worker.

One worker, on the real clock, runs two agents whose model is an OpenAI-compatible server on
127.0.0.1. The server holds the first request of two runs (`Hang`) far longer than the agents'
`model_timeout`; runs started after those requests hang must all finish while they still hang
(their timeout has not fired: no attempt of theirs has failed yet). Then the hung calls are
abandoned at `model_timeout`: one run retries its model step (a durable timer, the same
request again, answered this time), the other falls back to its second model within the step.

Real time, with generous deadlines: what is asserted is the order of events, not how fast.
"""

from __future__ import annotations

import asyncio
import json
import threading
import time
from collections import Counter
from collections.abc import AsyncIterator, Awaitable, Callable, Mapping
from pathlib import Path
from typing import Any

import pytest

from corral import Corral
from corral.agents import Agent
from corral.reliability import RetryPolicy
from corral.testing import OpenAICompatibleServer, ServerReply
from corral.testing.model_servers import Hang, ScriptItem

pytestmark = pytest.mark.slow

MODEL_TIMEOUT = 3.0
"""Seconds before a hung model call is abandoned: the other runs need far less."""
QUICK_RUNS = 6
DEADLINE = 60.0
"""Seconds any wait here may take before the test fails (a deadline, not a measurement)."""


class HoldFirstRequests:
    """Answers `done: <task> by <model>`, but holds the first request to `hang-model` of each
    task named `hang-*` for a minute (let go when the server stops). Called on the server's
    thread."""

    def __init__(self) -> None:
        self.seen: Counter[str] = Counter()
        self.held: list[str] = []
        self._lock = threading.Lock()

    def __call__(self, request: Mapping[str, Any]) -> ScriptItem:
        task = str(request["messages"][-1]["content"])
        body = json.dumps(request, sort_keys=True)
        with self._lock:
            self.seen[body] += 1
            first = self.seen[body] == 1
            if first and task.startswith("hang-") and request["model"] == "hang-model":
                self.held.append(task)
                return Hang(60.0)
        return ServerReply(f"done: {task} by {request['model']}")


async def wait_for(what: str, condition: Callable[[], Awaitable[bool]]) -> None:
    deadline = time.monotonic() + DEADLINE
    while not await condition():
        if time.monotonic() > deadline:
            raise AssertionError(f"still waiting after {DEADLINE}s for {what}")
        await asyncio.sleep(0.02)


@pytest.fixture
async def rules_and_server(
    monkeypatch: pytest.MonkeyPatch, tmp_path: Path
) -> AsyncIterator[tuple[HoldFirstRequests, OpenAICompatibleServer]]:
    monkeypatch.chdir(tmp_path)  # no stray .env
    rules = HoldFirstRequests()
    with OpenAICompatibleServer(rules=rules) as server:
        monkeypatch.setenv("OPENAI_BASE_URL", server.base_url)
        monkeypatch.setenv("OPENAI_API_KEY", "test")
        # The HTTP client's own timeout is far longer: the agent's model_timeout must fire.
        monkeypatch.setenv("CORRAL_MODEL_TIMEOUT", "120")
        yield rules, server


async def test_a_hung_model_call_never_blocks_other_runs_on_its_worker(
    db_url: str, rules_and_server: tuple[HoldFirstRequests, OpenAICompatibleServer]
) -> None:
    rules, server = rules_and_server
    retrying: Agent[Any] = Agent(
        "retrying",
        model="openai:hang-model",
        model_timeout=MODEL_TIMEOUT,
        retry=RetryPolicy(max_attempts=2, initial_delay=0.1, jitter=0),
    )
    falling_back: Agent[Any] = Agent(
        "falling_back",
        model="openai:hang-model",
        fallback_models=["openai:spare-model"],
        model_timeout=MODEL_TIMEOUT,
        retry=None,
    )
    async with Corral(db_url, poll_interval=0.05) as corral:
        corral.register(retrying, falling_back)
        worker = corral.worker(concurrency=16)
        serving = asyncio.create_task(worker.run())
        try:
            hung_retry = await corral.start(retrying, "hang-retry")
            hung_fallback = await corral.start(falling_back, "hang-fallback")

            async def both_held() -> bool:
                return len(rules.held) == 2

            await wait_for("the server to hold both first requests", both_held)
            quick = [await corral.start(retrying, f"quick-{n}") for n in range(QUICK_RUNS)]

            async def quick_done() -> bool:
                return all([await h.status() == "succeeded" for h in quick])

            await wait_for("the quick runs to succeed", quick_done)
            # The hung calls' timeouts have not fired yet: the quick runs did not wait on them.
            for hung in (hung_retry, hung_fallback):
                assert await hung.status() == "running"
                [model_step] = await corral.journal(hung.run_id)
                assert (model_step.status, model_step.detail) == ("started", None)
            for n, handle in enumerate(quick):
                expected = f"done: quick-{n} by hang-model"
                assert await handle.wait_for_result(timeout=DEADLINE) == expected

            assert await hung_retry.wait_for_result(timeout=DEADLINE) == (
                "done: hang-retry by hang-model"
            )
            assert await hung_fallback.wait_for_result(timeout=DEADLINE) == (
                "done: hang-fallback by spare-model"
            )
        finally:
            worker.stop()
            await serving
            await retrying.aclose()
            await falling_back.aclose()

        [retried] = await corral.journal(hung_retry.run_id)
        [attempt] = json.loads(retried.detail or "{}")["attempts"]
        assert attempt["code"] == "step_timeout"
        assert f"within {MODEL_TIMEOUT:g}s" in attempt["error"]
        assert json.loads(retried.result or "{}")["fallbacks"] == []

        [fell_back] = await corral.journal(hung_fallback.run_id)
        assert fell_back.detail is None  # no retry: the fallback answered within the step
        response = json.loads(fell_back.result or "{}")
        assert response["model"] == "openai:spare-model"
        assert response["fallbacks"] == ["openai:hang-model: step_timeout"]
    assert sorted(rules.held) == ["hang-fallback", "hang-retry"]
    assert not server.rule_errors


async def test_a_hang_is_let_go_when_the_server_stops() -> None:
    """`Hang` holds a request, then answers; a server that stops lets held requests go at once."""
    import openai

    with OpenAICompatibleServer([Hang(0.2, then="late"), Hang(600.0)]) as server:
        client = openai.AsyncOpenAI(api_key="test", base_url=server.base_url, max_retries=0)
        try:
            first = await client.chat.completions.create(model="m", messages=[])
            assert first.choices[0].message.content == "late"
            held = asyncio.create_task(client.chat.completions.create(model="m", messages=[]))

            async def held_now() -> bool:
                return len(server.requests) == 2

            await wait_for("the request to be held", held_now)
            stopped_at = time.monotonic()
            await asyncio.to_thread(server.__exit__, None, None, None)
            assert time.monotonic() - stopped_at < DEADLINE  # not the hang's ten minutes
            with pytest.raises(openai.APIStatusError) as failure:
                await held
            assert failure.value.status_code == 503
        finally:
            await client.close()
