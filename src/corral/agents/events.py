"""Following agents live: model output as it streams, tool calls as they start and end.

The journal records each model step's complete response once; these events are the live view
of the same steps, for a progress display, the CLI or a UI. They are process-local and not
durable: a subscriber that was not listening misses them, and the journal is the record.
"""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import AsyncIterator, Callable, Iterator
from dataclasses import dataclass
from typing import Literal

from corral.models.messages import ModelEvent, Usage

AgentEventKind = Literal["model", "tool_started", "tool_finished", "handoff", "final"]


@dataclass(frozen=True, slots=True)
class AgentEvent:
    """One thing an agent did, as it happened."""

    run_id: str
    agent: str
    kind: AgentEventKind
    seq: int | None = None
    """The journal step this event belongs to (None for events between steps)."""
    model_event: ModelEvent | None = None
    tool: str | None = None
    detail: str = ""
    usage: Usage | None = None


Listener = Callable[[AgentEvent], None]


class EventHub:
    """Fan-out of agent events to listeners and async subscribers, optionally by run."""

    def __init__(self) -> None:
        self._listeners: list[tuple[str | None, Listener]] = []

    @property
    def active(self) -> bool:
        """True when someone is listening (models stream only then)."""
        return bool(self._listeners)

    def publish(self, event: AgentEvent) -> None:
        for run_id, listener in list(self._listeners):
            if run_id is None or run_id == event.run_id:
                listener(event)

    @contextlib.contextmanager
    def listen(self, listener: Listener, *, run_id: str | None = None) -> Iterator[None]:
        """Call `listener` for every event (of `run_id` only, if given) inside the block."""
        entry = (run_id, listener)
        self._listeners.append(entry)
        try:
            yield None
        finally:
            self._listeners.remove(entry)

    @contextlib.asynccontextmanager
    async def follow(
        self, *, run_id: str | None = None
    ) -> AsyncIterator[asyncio.Queue[AgentEvent]]:
        """A queue that receives the events (of `run_id`) published inside the block."""
        queue: asyncio.Queue[AgentEvent] = asyncio.Queue()
        with self.listen(queue.put_nowait, run_id=run_id):
            yield queue


agent_events = EventHub()
"""The hub agents in this process publish to (like a logger: one per process, by design)."""
