"""The model protocol: one request in, one complete response out, optionally as a stream.

A model is an I/O boundary, so it is an injected interface with supported fakes
(`ScriptedModel`). Clients translate between Corral's messages and a provider's API; they do
not retry, journal or validate outputs — the tool loop and the reliability layer do that.
"""

from __future__ import annotations

from abc import ABC, abstractmethod
from collections.abc import AsyncIterator

from corral.models.messages import Completed, ModelEvent, ModelRequest, ModelResponse, TextDelta


class Model(ABC):
    """A model that agents call. Subclasses implement `complete`; streaming ones `stream`."""

    name: str
    """`provider:model`, as recorded on every response (`openai:gpt-4.1-mini`)."""

    @property
    def endpoint(self) -> str:
        """The dependency this model is: its name at its server (`openai:gpt-4o@https://…`).
        One circuit breaker and one retry budget per endpoint, shared by every run."""
        base_url = getattr(self, "base_url", None)
        return f"{self.name}@{base_url}" if base_url else self.name

    @abstractmethod
    async def complete(self, request: ModelRequest) -> ModelResponse:
        """Send one request; return the complete response with its token usage."""

    async def stream(self, request: ModelRequest) -> AsyncIterator[ModelEvent]:
        """Yield the response as it is produced, ending with `Completed`.

        The default streams nothing incrementally: one text delta, then the response.
        """
        response = await self.complete(request)
        if response.message.content:
            yield TextDelta(text=response.message.content)
        yield Completed(response=response)

    async def aclose(self) -> None:  # noqa: B027 - optional hook with an empty default
        """Release connections; the default has none."""

    def __repr__(self) -> str:
        return f"<{type(self).__name__} {self.name}>"
