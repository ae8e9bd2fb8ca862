"""The live event stream over HTTP: a real client reads `text/event-stream` from the server as
events happen (its tenant's only, and every breaker), gets heartbeats, resumes with
`Last-Event-ID`; the OpenAPI declares the stream. Each test closes its streams before the
server stops, which waits for every request: a stream that outlived its client would fail the
test's teardown."""

from __future__ import annotations

import asyncio
import contextlib
import json
from collections.abc import AsyncIterator
from dataclasses import dataclass, field
from typing import Any

import httpx2
import pytest

from corral import Corral, RunContext, workflow
from corral.reliability.breaker_store import append_transition
from corral.reliability.breakers import Transition

from .harness import ApiServer

pytestmark = pytest.mark.timeout(60)


@workflow
async def explode(ctx: RunContext, order: str) -> str:
    raise ValueError(f"order {order} cannot be refunded")


@dataclass
class Message:
    """One message of the stream: its fields, and its comment lines."""

    fields: dict[str, str] = field(default_factory=dict)
    comments: list[str] = field(default_factory=list)

    @property
    def data(self) -> Any:
        return json.loads(self.fields["data"])


class Reader:
    """Reads a stream's messages in the background; `next` moves the virtual clock a second at
    a time while it waits, since the stream polls on that clock."""

    def __init__(self, response: httpx2.Response, api: ApiServer) -> None:
        self.api = api
        self.messages: asyncio.Queue[Message] = asyncio.Queue()
        self.task = asyncio.create_task(self._read(response))

    async def _read(self, response: httpx2.Response) -> None:
        message = Message()
        async for line in response.aiter_lines():
            if not line:
                await self.messages.put(message)
                message = Message()
            elif line.startswith(":"):
                message.comments.append(line[1:].strip())
            else:
                name, _, value = line.partition(":")
                message.fields[name] = value.removeprefix(" ")

    async def next(self, *, events_only: bool = True) -> Message:
        for _ in range(400):
            try:
                message = await asyncio.wait_for(self.messages.get(), 0.02)
            except TimeoutError:
                self.api.clock.advance(1)
                continue
            if message.fields.get("event") or not events_only:
                return message
        raise AssertionError("no message came")

    async def close(self) -> None:
        self.task.cancel()
        with contextlib.suppress(asyncio.CancelledError):
            await self.task


@contextlib.asynccontextmanager
async def streaming(
    http: httpx2.AsyncClient, api: ApiServer, **headers: str
) -> AsyncIterator[Reader]:
    async with http.stream("GET", "/api/v1/events", headers=headers) as response:
        assert response.status_code == 200
        assert response.headers["content-type"].startswith("text/event-stream")
        assert response.headers["cache-control"] == "no-cache"
        assert response.headers["x-accel-buffering"] == "no"  # nginx: pass each event on
        reader = Reader(response, api)
        try:
            yield reader
        finally:
            await reader.close()


async def test_the_stream_sends_the_tenants_events_as_they_happen(api: ApiServer) -> None:
    viewer = await api.key("viewer")
    async with api.client(viewer) as http, streaming(http, api) as stream:
        hello = await stream.next(events_only=False)
        assert hello.comments == ["connected"]
        assert hello.fields["retry"] == "2000"

        await api.ask_approval(tenant="acme", run_id="theirs")
        mine = await api.ask_approval(run_id="ours")
        message = await stream.next()
        assert message.fields["event"] == "approval.requested"
        assert message.fields["id"].endswith(f"/approval.requested:{mine.approval_id}")
        event = message.data
        assert (event["id"], event["type"], event["tenant"]) == (
            f"approval.requested:{mine.approval_id}",
            "approval.requested",
            "default",
        )
        assert event["data"]["run_id"] == "ours"
        assert event["data"]["arguments"]["contact"] == "[redacted:email]"
        assert event["data"]["link"] == f"/approvals/{mine.approval_id}"

        transition = Transition("openai", "closed", "open", api.clock.now(), 10, 6, "6 of 10")
        await api.store.run_script(lambda d: append_transition("worker-1", transition))
        breaker = await stream.next()
        assert (breaker.fields["event"], breaker.data["tenant"]) == ("breaker.opened", "default")

        corral = Corral(store=api.store, clock=api.clock, workflows=[explode])
        handle = await corral.start("explode", "A-7")
        await corral.run_until_idle()
        seen = [await stream.next() for _ in range(2)]
        assert sorted((m.fields["event"], m.data["data"]["run_id"]) for m in seen) == [
            ("run.failed", handle.run_id),
            ("run.updated", handle.run_id),
        ]
        updated = next(m for m in seen if m.fields["event"] == "run.updated")
        assert updated.data["data"]["status"] == "failed"


async def test_a_quiet_stream_sends_heartbeats(api: ApiServer) -> None:
    viewer = await api.key("viewer")
    async with api.client(viewer) as http, streaming(http, api) as stream:
        started = api.clock.now()
        message = await stream.next(events_only=False)
        while "heartbeat" not in message.comments:
            message = await stream.next(events_only=False)
        assert 15 <= api.clock.now() - started <= 20


async def test_a_client_resumes_after_the_last_event_it_saw(api: ApiServer) -> None:
    viewer = await api.key("viewer")
    async with api.client(viewer) as http:
        async with streaming(http, api) as stream:
            first = await api.ask_approval(run_id="first")
            message = await stream.next()
            assert message.data["data"]["approval_id"] == first.approval_id
            last_id = message.fields["id"]
        # Disconnected: what happens meanwhile is sent when it reconnects.
        second = await api.ask_approval(run_id="second")
        api.clock.advance(5)
        async with streaming(http, api, **{"Last-Event-ID": last_id}) as stream:
            resumed = await stream.next()
            assert resumed.data["data"]["approval_id"] == second.approval_id

        # A script that polls: what happened since its last id, and the answer ends.
        once = await http.get(
            "/api/v1/events", params={"once": "true"}, headers={"Last-Event-ID": last_id}
        )
        assert once.status_code == 200
        assert f"approval.requested:{second.approval_id}" in once.text
        assert f"approval.requested:{first.approval_id}" not in once.text

        refused = await http.get("/api/v1/events", headers={"Last-Event-ID": "yesterday"})
        assert (refused.status_code, refused.json()["code"]) == (400, "invalid_last_event_id")
        assert refused.headers["content-type"] == "application/problem+json"
    async with api.client() as anonymous:
        missing = await anonymous.get("/api/v1/events")
        assert (missing.status_code, missing.json()["code"]) == (401, "unauthorized")
        spec = (await anonymous.get("/api/v1/openapi.json")).json()
    operation = spec["paths"]["/api/v1/events"]["get"]
    assert "text/event-stream" in operation["responses"]["200"]["content"]
    assert operation["x-corral-role"] == "viewer"
