"""A webhook receiver for tests: a real HTTP server on 127.0.0.1 that records what it is sent
and answers as the test planned (fail on purpose: 500, 429 with `Retry-After`, a redirect)."""

from __future__ import annotations

import asyncio
import contextlib
import socket
from collections.abc import AsyncIterator
from dataclasses import dataclass, field

import uvicorn
from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import Response
from starlette.routing import Route


@dataclass(frozen=True)
class Received:
    """One request the receiver got."""

    path: str
    headers: dict[str, str]
    body: bytes


@dataclass
class Receiver:
    """Records requests; answers each with the next planned (status, headers), else 200."""

    base_url: str = ""
    received: list[Received] = field(default_factory=list)
    planned: dict[str | None, list[tuple[int, dict[str, str]]]] = field(default_factory=dict)

    def plan(self, *answers: int | tuple[int, dict[str, str]], path: str | None = None) -> None:
        """Answer the next requests (to `path`, or to any path) with these statuses (and
        headers), in order."""
        queue = self.planned.setdefault(path, [])
        for answer in answers:
            queue.append(answer if isinstance(answer, tuple) else (answer, {}))

    def url(self, path: str = "/hook") -> str:
        return f"{self.base_url}{path}"

    @property
    def event_ids(self) -> list[str]:
        return [request.headers["corral-event-id"] for request in self.received]

    async def _handle(self, request: Request) -> Response:
        body = await request.body()
        self.received.append(Received(request.url.path, dict(request.headers), body))
        queue = self.planned.get(request.url.path) or self.planned.get(None) or []
        status, headers = queue.pop(0) if queue else (200, {})
        return Response(f"answer {status}", status_code=status, headers=headers)


@contextlib.asynccontextmanager
async def receiving() -> AsyncIterator[Receiver]:
    """A `Receiver` listening on 127.0.0.1 for the duration of the block."""
    receiver = Receiver()
    app = Starlette(routes=[Route("/{path:path}", receiver._handle, methods=["POST"])])
    server = uvicorn.Server(
        uvicorn.Config(app, host="127.0.0.1", port=0, log_level="warning", lifespan="off")
    )
    task = asyncio.create_task(server.serve())
    for _ in range(500):
        if server.started:
            break
        if task.done():
            task.result()
        await asyncio.sleep(0.01)
    port = server.servers[0].sockets[0].getsockname()[1]
    receiver.base_url = f"http://127.0.0.1:{port}"
    try:
        yield receiver
    finally:
        server.should_exit = True
        await asyncio.wait_for(task, 10)


def closed_port_url() -> str:
    """A URL on 127.0.0.1 where nothing listens: connecting to it is refused."""
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        port = probe.getsockname()[1]
    return f"http://127.0.0.1:{port}/hook"
