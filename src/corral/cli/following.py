"""`--follow`: agents' output as it streams, on stderr, while a run executes in this process.

The journal records each model step's complete response once; this is the live view of the same
steps (model text as it arrives, tool calls as they start and finish). It is printed to stderr so
that stdout keeps only the run's outcome (or its JSON).
"""

from __future__ import annotations

import contextlib
import sys
from collections.abc import Iterator

from corral.agents import AgentEvent, agent_events


class _Printer:
    def __init__(self) -> None:
        self.speaking: str | None = None  # the agent whose text is mid-line

    def __call__(self, event: AgentEvent) -> None:
        out = sys.stderr
        if event.kind == "model" and event.model_event is not None:
            if event.model_event.kind == "text":
                if self.speaking != event.agent:
                    self._end_line()
                    out.write(f"{event.agent}: ")
                    self.speaking = event.agent
                out.write(event.model_event.text)
                out.flush()
            return
        self._end_line()
        if event.kind == "tool_started":
            out.write(f"{event.agent} → {event.tool}({event.detail})\n")
        elif event.kind == "tool_finished":
            out.write(f"{event.agent} ← {event.tool}: {_short(event.detail)}\n")
        elif event.kind == "handoff":
            out.write(f"{event.agent} ⇒ {event.detail}\n")
        out.flush()

    def _end_line(self) -> None:
        if self.speaking is not None:
            sys.stderr.write("\n")
            self.speaking = None


def _short(text: str, limit: int = 160) -> str:
    text = " ".join(text.split())
    return text if len(text) <= limit else text[: limit - 1] + "…"


@contextlib.contextmanager
def following(enabled: bool) -> Iterator[None]:
    """Print agent events to stderr inside the block, if `enabled`."""
    if not enabled:
        yield
        return
    printer = _Printer()
    with agent_events.listen(printer):
        try:
            yield
        finally:
            printer._end_line()
