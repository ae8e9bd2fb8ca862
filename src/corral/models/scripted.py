"""The scripted model: deterministic answers from a script of turns or from rules.

It is the embedded default when no model is configured (so `make demo` needs no API key), and
the model agents are tested with. Every response it gives is labelled: its `model` is
`scripted:<name>`, and the default model's text starts with `[scripted model]`.

A script never depends on how many calls this process has made: the turn to play is chosen from
the request itself (how many answers this agent has already given in the conversation), so a
run resumed on another worker, after a crash, gets the same answer for the same request.
"""

from __future__ import annotations

import json
from collections.abc import AsyncIterator, Callable, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

from corral.errors import ModelCallFailed
from corral.models.messages import (
    Completed,
    Message,
    ModelEvent,
    ModelRequest,
    ModelResponse,
    TextDelta,
    ToolCall,
    ToolCallDelta,
    Usage,
)
from corral.models.model import Model


@dataclass(frozen=True)
class Call:
    """A tool call in a script. `arguments` as a str is sent verbatim (to script malformed JSON)."""

    name: str
    arguments: Mapping[str, Any] | str = field(default_factory=dict)


@dataclass(frozen=True)
class Turn:
    """One scripted answer: text, tool calls, or both."""

    text: str = ""
    calls: tuple[Call, ...] = ()


def reply(text: str = "", *calls: Call) -> Turn:
    """A scripted turn: `reply("done")`, `reply("", Call("lookup", {"id": 7}))`."""
    return Turn(text, tuple(calls))


Rules = Callable[[ModelRequest], "Turn | str | None"]
"""A function of the request returning the turn to play (None: no rule matched)."""


class ScriptedModel(Model):
    """A deterministic model.

    Args:
        script: The turns to play, in order, for every agent; or a mapping from agent name to
            that agent's turns. A `str` turn is a final text answer.
        rules: A function of the request that returns the turn to play; tried before `script`.
        name: Recorded as `scripted:<name>` on every response.
    """

    def __init__(
        self,
        script: Sequence[Turn | str] | Mapping[str, Sequence[Turn | str]] = (),
        *,
        rules: Rules | None = None,
        name: str = "script",
    ) -> None:
        self.name = f"scripted:{name}"
        self._script = script
        self._rules = rules

    @classmethod
    def default(cls) -> ScriptedModel:
        """The model agents use when none is configured: it says so, and echoes the request."""
        return cls(rules=_default_rules, name="default")

    async def complete(self, request: ModelRequest) -> ModelResponse:
        turn = self._turn(request)
        index = _answers_so_far(request)
        tool_calls = [
            ToolCall(
                call_id=f"call_{request.agent or 'model'}_{index}_{position}",
                name=call.name,
                arguments=call.arguments
                if isinstance(call.arguments, str)
                else json.dumps(dict(call.arguments), sort_keys=True),
            )
            for position, call in enumerate(turn.calls)
        ]
        message = Message(
            role="assistant", content=turn.text, tool_calls=tool_calls, author=request.agent
        )
        return ModelResponse(
            message=message,
            usage=Usage(
                input_tokens=_tokens(request.instructions)
                + sum(_tokens(m.content) + _tokens(_calls_text(m)) for m in request.messages),
                output_tokens=_tokens(turn.text) + _tokens(_calls_text(message)),
            ),
            model=self.name,
            finish_reason="tool_calls" if tool_calls else "stop",
        )

    async def stream(self, request: ModelRequest) -> AsyncIterator[ModelEvent]:
        response = await self.complete(request)
        words = response.message.content.split(" ")
        for position, word in enumerate(words):
            if word or position:
                yield TextDelta(text=word if position == 0 else f" {word}")
        for call in response.tool_calls:
            yield ToolCallDelta(call_id=call.call_id, name=call.name)
        yield Completed(response=response)

    def _turn(self, request: ModelRequest) -> Turn:
        if self._rules is not None:
            ruled = self._rules(request)
            if ruled is not None:
                return Turn(ruled) if isinstance(ruled, str) else ruled
        script = self._script
        agent = request.agent or ""
        if isinstance(script, Mapping):
            turns: Sequence[Turn | str] = script.get(agent, ())
        else:
            turns = script
        index = _answers_so_far(request)
        if index >= len(turns):
            raise ModelCallFailed(
                f"{self.name} has no turn {index + 1} for agent {agent or '(none)'!r}: its script "
                f"has {len(turns)} turn(s) and no rule matched",
                model=self.name,
                agent=agent,
            )
        turn = turns[index]
        return Turn(turn) if isinstance(turn, str) else turn


def _answers_so_far(request: ModelRequest) -> int:
    """How many answers the requesting agent has already given in this conversation."""
    return sum(
        1
        for message in request.messages
        if message.role == "assistant" and message.author in (request.agent, None)
    )


def _tokens(text: str) -> int:
    """A deterministic stand-in for a tokenizer: about four characters a token."""
    return (len(text) + 3) // 4


def _calls_text(message: Message) -> str:
    return "".join(call.name + call.arguments for call in message.tool_calls)


def _default_rules(request: ModelRequest) -> Turn:
    last_user = next((m.content for m in reversed(request.messages) if m.role == "user"), "")
    results = [m.content for m in request.messages if m.role == "tool"]
    if results:
        return Turn(f"[scripted model] Based on the tools: {'; '.join(results)}")
    return Turn(
        f"[scripted model] No model is configured (set CORRAL_MODEL, e.g. "
        f"openai:gpt-4.1-mini), so this is a scripted answer to: {last_user}"
    )
