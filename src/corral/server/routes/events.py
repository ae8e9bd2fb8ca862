"""Live events: a server-sent event stream of the caller's tenant's events.

`GET /api/v1/events` answers `text/event-stream`: each event (`corral.control.events`: the
approval, run, budget and breaker events, and `run.updated` whenever a run changes) as

```
id: 1700000000.000000/approval.requested:1b4e28ba-2fa1-11d2-883f-0016d3cca427
event: approval.requested
data: {"id": "approval.requested:1b4e…", "type": "approval.requested", "tenant": "acme", …}
```

with a `: heartbeat` comment after `HEARTBEAT` seconds without one, so proxies keep the
connection open. The stream polls the store every `POLL_INTERVAL` seconds (cheap: indexed reads
of a short window) and ends when the client disconnects.

Resuming: a browser's `EventSource` reconnects by itself and sends the last `id:` it saw as
`Last-Event-ID`; the stream then starts again from `LOOKBACK` seconds before that event. Since
transactions commit out of order, an event can appear after later ones have been sent; so a
resumed stream may repeat events of that window, never skips one. Clients drop repeats by the
event's `id` (the `data`'s `id` field). Without `Last-Event-ID`, the stream starts now.
"""

from __future__ import annotations

import math
from collections.abc import AsyncIterator
from typing import Annotated

from fastapi import APIRouter, Depends, Header, Query, Request
from fastapi.sse import EventSourceResponse, ServerSentEvent

from corral.control.events import LOOKBACK, STREAM_TYPES, Event, detect_events
from corral.server.problems import Problem
from corral.server.routing import CallerDep, route
from corral.server.state import ServerState, state_of
from corral.store.scripts import Dialect, Script, ScriptFactory

router = APIRouter(tags=["events"])

POLL_INTERVAL = 1.0
"""Seconds between two reads of the store by one stream."""
HEARTBEAT = 15.0
"""Seconds of silence after which a stream sends a comment."""
RECONNECT_MS = 2000
"""How long a disconnected `EventSource` waits before reconnecting (the `retry:` field)."""

Position = tuple[float, str]
"""Where a stream got to: the time and id of the last event it sent."""


def stream_id(event: Event) -> str:
    """An event's `id:` line: its time and id, so a reconnecting client says where it was."""
    return f"{event.time:.6f}/{event.event_id}"


def resume_position(
    last_event_id: Annotated[
        str | None,
        Header(
            max_length=1000,
            description="The last `id:` received: the stream resumes after it.",
        ),
    ] = None,
) -> Position | None:
    """The position a reconnecting client's `Last-Event-ID` names; 400 if it is not one."""
    if last_event_id is None or not last_event_id.strip():
        return None
    time_text, separator, event_id = last_event_id.strip().partition("/")
    try:
        time = float(time_text)
    except ValueError:
        time = math.nan
    if not separator or not event_id or not math.isfinite(time):
        raise Problem(
            400,
            "invalid_last_event_id",
            "Last-Event-ID must be an `id:` this stream sent (`<time>/<event id>`)",
        )
    return (time, event_id)


@route(
    router,
    "GET",
    "/events",
    "viewer",
    response_class=EventSourceResponse,
    summary="Live events (server-sent events)",
    responses={
        200: {
            "description": "A `text/event-stream`: each event's `data` is its JSON (`id`, "
            "`type`, `tenant`, `time`, `data`)."
        }
    },
)
async def stream_events(
    caller: CallerDep,
    request: Request,
    resume: Annotated[Position | None, Depends(resume_position)],
    once: Annotated[
        bool,
        Query(description="Send what is there already (since `Last-Event-ID`) and end."),
    ] = False,
) -> AsyncIterator[ServerSentEvent]:
    """The tenant's events as they happen (and every tenant's `breaker.opened`), polled every
    second. Reconnect with `Last-Event-ID` to resume; repeats are possible after a reconnect:
    drop them by `id`."""
    state = state_of(request)
    async for message in _stream(state, caller.tenant, resume, once=once):
        yield message


def _window(tenant: str, since: float, until: float) -> ScriptFactory[list[Event]]:
    def read(dialect: Dialect) -> Script[list[Event]]:
        return detect_events(since=since, until=until, tenant=tenant, types=STREAM_TYPES)

    return read


async def _stream(
    state: ServerState, tenant: str, resume: Position | None, *, once: bool
) -> AsyncIterator[ServerSentEvent]:
    clock = state.clock
    started = clock.now()
    sent: dict[str, float] = {}  # ids sent, with their times, that the next read still covers
    if resume is None:
        floor = started - LOOKBACK if once else started
    else:
        floor = resume[0] - LOOKBACK
        sent[resume[1]] = resume[0]
    read_to = floor
    last_sent = started
    yield ServerSentEvent(comment="connected", retry=RECONNECT_MS)
    while True:
        now = clock.now()
        since = max(floor, read_to - LOOKBACK)
        events = await state.store.read_script(_window(tenant, since, now))
        for event in events:
            if event.event_id in sent:
                continue
            sent[event.event_id] = event.time
            last_sent = now
            yield ServerSentEvent(id=stream_id(event), event=event.type, data=event.body(tenant))
        read_to = max(read_to, now)
        horizon = max(floor, read_to - LOOKBACK)
        for event_id in [key for key, time in sent.items() if time < horizon]:
            del sent[event_id]
        if once:
            return
        if now - last_sent >= HEARTBEAT:
            last_sent = now
            yield ServerSentEvent(comment="heartbeat")
        await clock.sleep(POLL_INTERVAL)


__all__ = ["HEARTBEAT", "POLL_INTERVAL", "router", "stream_id"]
