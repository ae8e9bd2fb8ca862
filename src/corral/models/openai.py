"""The OpenAI client, and every server that speaks the Chat Completions API.

Chat Completions (not the newer Responses API) is what vLLM, Ollama, llama.cpp and LM Studio
implement, so one client reaches OpenAI and any of them: point `base_url` at the server.

Translation, both ways:

- Corral's instructions become the first system message; tool messages carry `tool_call_id`;
  assistant messages carry their `tool_calls` with the argument text exactly as the model wrote
  it. A message's `author` is Corral's own and is not sent (the API's optional `name` field is
  rejected or mangled by several compatible servers).
- An `output_schema` becomes `response_format={"type": "json_schema", ...}` when the request
  has no tools. With tools, the final answer is only one of the model's possible turns, so the
  schema is described in a system message instead; either way the agent validates the answer.
- Tool-call arguments are passed through as text, even when they are not valid JSON: the tool
  loop reports that to the model. A response that is not a chat completion at all (no choices,
  arguments that are not text) is a `ModelCallFailed`.

The SDK makes no retries of its own by default (`max_retries=0`): a failure is raised as
`ModelCallFailed`, with `retryable` saying whether trying later may work and `retry_after` what the
server asked for, and the model step's retry policy decides (durably, under retry budgets and
circuit breakers).
"""

from __future__ import annotations

import json
from collections.abc import AsyncIterator
from dataclasses import dataclass, field
from typing import Any, NoReturn

import openai
from openai.types.chat import ChatCompletion, ChatCompletionChunk, ChatCompletionMessageParam

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

_KEY_SETTING = "OPENAI_API_KEY"


class OpenAIModel(Model):
    """A model behind the OpenAI Chat Completions API.

    Args:
        model: The model's name on the server (`gpt-4.1-mini`, `llama3.1:8b`, ...).
        api_key: Sent as the bearer token. Servers that need none accept any non-empty text.
        base_url: The API's base URL, e.g. `http://127.0.0.1:8000/v1` for vLLM; None for the
            SDK's default (`OPENAI_BASE_URL`, else https://api.openai.com/v1).
        timeout: Seconds for one HTTP request.
        max_retries: Retries the SDK makes itself within one attempt (0: Corral retries).
    """

    def __init__(
        self,
        model: str,
        *,
        api_key: str,
        base_url: str | None = None,
        timeout: float = 60.0,
        max_retries: int = 0,
    ) -> None:
        self.name = f"openai:{model}"
        if not api_key:
            raise ModelNotConfigured(
                f"model {self.name!r} needs an API key: set {_KEY_SETTING} (a server that needs "
                "none accepts any non-empty key)",
                model=self.name,
                setting=_KEY_SETTING,
            )
        self._model = model
        self._client = openai.AsyncOpenAI(
            api_key=api_key, base_url=base_url, timeout=timeout, max_retries=max_retries
        )
        # The SDK resolved None to OPENAI_BASE_URL or its default: check what it will use.
        self.base_url = str(self._client.base_url).rstrip("/")

    async def complete(self, request: ModelRequest) -> ModelResponse:
        check_model_request(self.name, self.base_url)
        try:
            completion = await self._client.chat.completions.create(
                model=self._model, **_request_params(request)
            )
        except (openai.OpenAIError, json.JSONDecodeError) as error:
            self._raise_call_failed(error)
        return self._response(completion, request.agent)

    async def stream(self, request: ModelRequest) -> AsyncIterator[ModelEvent]:
        check_model_request(self.name, self.base_url)
        accumulated = _StreamedResponse()
        try:
            chunks = await self._client.chat.completions.create(
                model=self._model,
                stream=True,
                stream_options={"include_usage": True},
                **_request_params(request),
            )
            async with chunks:
                async for chunk in chunks:
                    for event in accumulated.add(chunk, model=self.name, url=self.base_url):
                        yield event
        except (openai.OpenAIError, json.JSONDecodeError) as error:
            self._raise_call_failed(error)
        yield Completed(response=accumulated.response(self.name, self.base_url, request.agent))

    async def aclose(self) -> None:
        await self._client.close()

    def _response(self, completion: ChatCompletion, agent: str | None) -> ModelResponse:
        # The SDK builds responses without validating them, so a compatible server's odd
        # answer arrives here as is: check the shape rather than trust the type hints.
        choices = getattr(completion, "choices", None)
        if not isinstance(choices, list) or not choices:
            raise malformed(self.name, self.base_url, "it has no choices")
        choice = choices[0]
        message = getattr(choice, "message", None)
        if message is None:
            raise malformed(self.name, self.base_url, "its first choice has no message")
        content = getattr(message, "content", None)
        if content is not None and not isinstance(content, str):
            raise malformed(self.name, self.base_url, "the message content is not text")
        tool_calls: list[ToolCall] = []
        for call in getattr(message, "tool_calls", None) or []:
            function = getattr(call, "function", None)
            call_id = getattr(call, "id", None)
            tool_calls.append(
                _tool_call(
                    self.name,
                    self.base_url,
                    call_id,
                    getattr(function, "name", None),
                    getattr(function, "arguments", None),
                )
            )
        return ModelResponse(
            message=Message(
                role="assistant", content=content or "", tool_calls=tool_calls, author=agent
            ),
            usage=_usage(getattr(completion, "usage", None)),
            model=self.name,
            finish_reason=getattr(choice, "finish_reason", None),
        )

    def _raise_call_failed(self, error: openai.OpenAIError | json.JSONDecodeError) -> NoReturn:
        raise call_failed(
            self.name,
            self.base_url,
            error,
            key_setting=_KEY_SETTING,
            status_error=openai.APIStatusError,
            connection_error=openai.APIConnectionError,
            validation_error=openai.APIResponseValidationError,
        ) from error


def _request_params(request: ModelRequest) -> dict[str, Any]:
    """The Chat Completions parameters for `request`, except the model and streaming ones."""
    messages: list[ChatCompletionMessageParam] = []
    if request.instructions:
        messages.append({"role": "system", "content": request.instructions})
    if request.output_schema is not None and request.tools:
        messages.append({"role": "system", "content": schema_note(request.output_schema)})
    messages.extend(_message_param(message) for message in request.messages)
    params: dict[str, Any] = {"messages": messages}
    if request.tools:
        params["tools"] = [
            {
                "type": "function",
                "function": {
                    "name": tool.name,
                    "description": tool.description,
                    "parameters": tool.parameters,
                },
            }
            for tool in request.tools
        ]
    elif request.output_schema is not None:
        # Not `strict`: strict mode accepts only a subset of JSON Schema (every property
        # required, no additional properties), which ordinary pydantic schemas do not meet.
        params["response_format"] = {
            "type": "json_schema",
            "json_schema": {"name": "output", "schema": request.output_schema},
        }
    return params


def _message_param(message: Message) -> ChatCompletionMessageParam:
    if message.role == "system":
        return {"role": "system", "content": message.content}
    if message.role == "user":
        return {"role": "user", "content": message.content}
    if message.role == "tool":
        call_id = message.tool_call_id or ""
        return {"role": "tool", "content": message.content, "tool_call_id": call_id}
    if not message.tool_calls:
        return {"role": "assistant", "content": message.content}
    return {
        "role": "assistant",
        # Null rather than "" beside tool calls: some servers reject an empty text part.
        "content": message.content or None,
        "tool_calls": [
            {
                "id": call.call_id,
                "type": "function",
                "function": {"name": call.name, "arguments": call.arguments},
            }
            for call in message.tool_calls
        ],
    }


def _usage(usage: Any) -> Usage:
    if usage is None:
        return Usage(input_tokens=0, output_tokens=0)
    return Usage(
        input_tokens=getattr(usage, "prompt_tokens", None) or 0,
        output_tokens=getattr(usage, "completion_tokens", None) or 0,
    )


def _tool_call(model: str, url: str, call_id: Any, name: Any, arguments: Any) -> ToolCall:
    if not isinstance(call_id, str) or not isinstance(name, str):
        raise malformed(model, url, "a tool call has no id or no function name")
    if not isinstance(arguments, str):
        raise malformed(
            model,
            url,
            f"the arguments of tool call {call_id!r} ({name}) are "
            f"{type(arguments).__name__}, not JSON text",
        )
    return ToolCall(call_id=call_id, name=name, arguments=arguments)


@dataclass
class _PartialCall:
    call_id: str | None = None
    name: str | None = None
    arguments: list[str] = field(default_factory=list)
    announced: bool = False


@dataclass
class _StreamedResponse:
    """What the chunks of one stream add up to; `response()` equals what `complete` returns."""

    text: list[str] = field(default_factory=list)
    calls: dict[int, _PartialCall] = field(default_factory=dict)
    finish_reason: str | None = None
    usage: Any = None
    chunks: int = 0

    def add(self, chunk: ChatCompletionChunk, *, model: str, url: str) -> list[ModelEvent]:
        self.chunks += 1
        events: list[ModelEvent] = []
        if getattr(chunk, "usage", None) is not None:
            self.usage = chunk.usage
        for choice in getattr(chunk, "choices", None) or []:
            if getattr(choice, "index", 0) != 0:
                continue
            if getattr(choice, "finish_reason", None) is not None:
                self.finish_reason = choice.finish_reason
            delta = getattr(choice, "delta", None)
            content = getattr(delta, "content", None)
            if content:
                if not isinstance(content, str):
                    raise malformed(model, url, "a streamed content delta is not text")
                self.text.append(content)
                events.append(TextDelta(text=content))
            for call_delta in getattr(delta, "tool_calls", None) or []:
                index = getattr(call_delta, "index", None)
                if not isinstance(index, int):
                    raise malformed(model, url, "a streamed tool call has no index")
                partial = self.calls.setdefault(index, _PartialCall())
                partial.call_id = getattr(call_delta, "id", None) or partial.call_id
                function = getattr(call_delta, "function", None)
                partial.name = getattr(function, "name", None) or partial.name
                fragment = getattr(function, "arguments", None)
                if fragment is not None:
                    if not isinstance(fragment, str):
                        raise malformed(
                            model,
                            url,
                            f"a streamed argument fragment of tool call {index} is "
                            f"{type(fragment).__name__}, not text",
                        )
                    partial.arguments.append(fragment)
                if not partial.announced and partial.call_id and partial.name:
                    partial.announced = True
                    events.append(ToolCallDelta(call_id=partial.call_id, name=partial.name))
        return events

    def response(self, model: str, url: str, agent: str | None) -> ModelResponse:
        if not self.chunks:
            raise malformed(model, url, "the stream ended before its first chunk")
        tool_calls = [
            _tool_call(model, url, partial.call_id, partial.name, "".join(partial.arguments))
            for _, partial in sorted(self.calls.items())
        ]
        return ModelResponse(
            message=Message(
                role="assistant", content="".join(self.text), tool_calls=tool_calls, author=agent
            ),
            usage=_usage(self.usage),
            model=model,
            finish_reason=self.finish_reason,
        )
