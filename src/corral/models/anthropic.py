"""The Anthropic client: Corral's messages over the Messages API.

Translation, both ways:

- Corral's instructions (and any system messages of the conversation) become `system`; an
  `output_schema` is described there too, since the agent validates the final answer itself
  and not every Claude model (or compatible server) supports constrained output.
- Assistant tool calls become `tool_use` blocks. Their input must be an object, so arguments
  are JSON-decoded; arguments that do not decode to an object (the model wrote malformed JSON,
  which the tool loop already reported back) are sent as `{}`.
- Tool results become `tool_result` blocks in a user message; consecutive messages of one role
  are merged into one message, as the API expects roles to alternate.
- Text blocks of the answer are joined; `tool_use` blocks become tool calls whose arguments are
  the JSON text of their input. Usage counts the whole prompt: uncached, cache-written and
  cache-read input tokens (as OpenAI's `prompt_tokens` does), and the output tokens.

The SDK makes no retries of its own by default (`max_retries=0`): a failure is raised as
`ModelCallFailed`, with `retryable` saying whether trying later may work and `retry_after` what the
server asked for, and the model step's retry policy decides (durably, under retry budgets and
circuit breakers).
"""

from __future__ import annotations

import json
from collections.abc import AsyncIterator
from typing import Any, NoReturn

import anthropic
from anthropic.types import Message as AnthropicMessage

from corral.errors import ModelNotConfigured
from corral.models.failures import call_failed, malformed, schema_note
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
from corral.models.network import check_model_request

_KEY_SETTING = "ANTHROPIC_API_KEY"


class AnthropicModel(Model):
    """A Claude model behind the Anthropic Messages API.

    Args:
        model: The model's name (`claude-sonnet-4-5`, ...).
        api_key: The API key.
        base_url: The API's base URL (without `/v1`); None for the SDK's default
            (`ANTHROPIC_BASE_URL`, else https://api.anthropic.com).
        timeout: Seconds for one HTTP request.
        max_retries: Retries the SDK makes itself within one attempt (0: Corral retries).
        max_tokens: The most tokens one answer may have (the API requires a limit).
    """

    def __init__(
        self,
        model: str,
        *,
        api_key: str,
        base_url: str | None = None,
        timeout: float = 60.0,
        max_retries: int = 0,
        max_tokens: int = 4096,
    ) -> None:
        self.name = f"anthropic:{model}"
        if not api_key:
            raise ModelNotConfigured(
                f"model {self.name!r} needs an API key: set {_KEY_SETTING}",
                model=self.name,
                setting=_KEY_SETTING,
            )
        self._model = model
        self._max_tokens = max_tokens
        self._client = anthropic.AsyncAnthropic(
            api_key=api_key, base_url=base_url, timeout=timeout, max_retries=max_retries
        )
        # The SDK resolved None to ANTHROPIC_BASE_URL or its default: check what it will use.
        self.base_url = str(self._client.base_url).rstrip("/")

    async def complete(self, request: ModelRequest) -> ModelResponse:
        check_model_request(self.name, self.base_url)
        try:
            message = await self._client.messages.create(
                model=self._model, max_tokens=self._max_tokens, **_request_params(request)
            )
        except (anthropic.AnthropicError, json.JSONDecodeError) as error:
            self._raise_call_failed(error)
        return self._response(message, request.agent)

    async def stream(self, request: ModelRequest) -> AsyncIterator[ModelEvent]:
        check_model_request(self.name, self.base_url)
        try:
            async with self._client.messages.stream(
                model=self._model, max_tokens=self._max_tokens, **_request_params(request)
            ) as events:
                started = stopped = False
                async for event in events:
                    if event.type == "message_start":
                        started = True
                    elif not started:
                        problem = f"a {event.type} event came before message_start"
                        raise malformed(self.name, self.base_url, problem)
                    elif event.type == "message_stop":
                        stopped = True
                    if event.type == "text":
                        if event.text:
                            yield TextDelta(text=event.text)
                    elif event.type == "content_block_start":
                        block = event.content_block
                        if block.type == "tool_use":
                            yield ToolCallDelta(call_id=block.id, name=block.name)
                if not stopped:
                    problem = "the stream ended before message_stop"
                    raise malformed(self.name, self.base_url, problem)
                final = events.current_message_snapshot
        except (anthropic.AnthropicError, ValueError, RuntimeError) as error:
            # ValueError (JSONDecodeError among them) and RuntimeError: what the SDK's stream
            # accumulator raises on undecodable data or events out of order.
            self._raise_call_failed(error)
        # The SDK's own accumulation of the events: the same shape `complete` converts.
        yield Completed(response=self._response(final, request.agent))

    async def aclose(self) -> None:
        await self._client.close()

    def _response(self, message: AnthropicMessage, agent: str | None) -> ModelResponse:
        # The SDK builds responses without validating them, so a compatible server's odd
        # answer arrives here as is: check the shape rather than trust the type hints.
        blocks = getattr(message, "content", None)
        if not isinstance(blocks, list):
            raise malformed(self.name, self.base_url, "it has no content blocks")
        text: list[str] = []
        tool_calls: list[ToolCall] = []
        for block in blocks:
            kind = getattr(block, "type", None)
            if kind == "text":
                piece = getattr(block, "text", None)
                if not isinstance(piece, str):
                    raise malformed(self.name, self.base_url, "a text block has no text")
                text.append(piece)
            elif kind == "tool_use":
                call_id, name = getattr(block, "id", None), getattr(block, "name", None)
                if not isinstance(call_id, str) or not isinstance(name, str):
                    raise malformed(self.name, self.base_url, "a tool_use block has no id or name")
                arguments = json.dumps(getattr(block, "input", None) or {})
                tool_calls.append(ToolCall(call_id=call_id, name=name, arguments=arguments))
            # Other blocks (thinking, server tools' results) are not part of Corral's message.
        return ModelResponse(
            message=Message(
                role="assistant", content="".join(text), tool_calls=tool_calls, author=agent
            ),
            usage=_usage(getattr(message, "usage", None)),
            model=self.name,
            finish_reason=getattr(message, "stop_reason", None),
        )

    def _raise_call_failed(self, error: Exception) -> NoReturn:
        raise call_failed(
            self.name,
            self.base_url,
            error,
            key_setting=_KEY_SETTING,
            status_error=anthropic.APIStatusError,
            connection_error=anthropic.APIConnectionError,
            validation_error=anthropic.APIResponseValidationError,
        ) from error


def _request_params(request: ModelRequest) -> dict[str, Any]:
    """The Messages API parameters for `request`, except the model and `max_tokens`."""
    system = [request.instructions] if request.instructions else []
    system.extend(m.content for m in request.messages if m.role == "system" and m.content)
    if request.output_schema is not None:
        system.append(schema_note(request.output_schema))
    params: dict[str, Any] = {"messages": _message_params(request.messages)}
    if system:
        params["system"] = "\n\n".join(system)
    if request.tools:
        params["tools"] = [
            {"name": tool.name, "description": tool.description, "input_schema": tool.parameters}
            for tool in request.tools
        ]
    return params


def _message_params(messages: list[Message]) -> list[dict[str, Any]]:
    merged: list[dict[str, Any]] = []
    for message in messages:
        if message.role == "system":
            continue  # sent as part of `system`
        role = "assistant" if message.role == "assistant" else "user"
        blocks = _blocks(message)
        if not blocks:
            continue  # the API rejects empty content
        if merged and merged[-1]["role"] == role:
            merged[-1]["content"].extend(blocks)
        else:
            merged.append({"role": role, "content": blocks})
    return merged


def _blocks(message: Message) -> list[Any]:
    if message.role == "tool":
        return [
            {
                "type": "tool_result",
                "tool_use_id": message.tool_call_id or "",
                "content": message.content,
            }
        ]
    blocks: list[Any] = []
    if message.content:
        blocks.append({"type": "text", "text": message.content})
    if message.role == "assistant":
        blocks.extend(
            {"type": "tool_use", "id": call.call_id, "name": call.name, "input": _input(call)}
            for call in message.tool_calls
        )
    return blocks


def _input(call: ToolCall) -> dict[str, Any]:
    try:
        decoded = json.loads(call.arguments)
    except json.JSONDecodeError:
        return {}
    return decoded if isinstance(decoded, dict) else {}


def _usage(usage: Any) -> Usage:
    if usage is None:
        return Usage(input_tokens=0, output_tokens=0)
    input_tokens = sum(
        getattr(usage, name, None) or 0
        for name in ("input_tokens", "cache_creation_input_tokens", "cache_read_input_tokens")
    )
    return Usage(input_tokens=input_tokens, output_tokens=getattr(usage, "output_tokens", 0) or 0)
