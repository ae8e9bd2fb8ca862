"""Fake model servers: real HTTP servers on 127.0.0.1 that play a script of responses.

They let a test drive the real OpenAI and Anthropic SDKs (and so Corral's clients, or any code
of yours that uses them) without a network or an API key:

```python
from corral.models import Call
from corral.testing import OpenAICompatibleServer, ServerFailure, ServerReply

script = [
    ServerFailure(429),                                   # rate limited once
    ServerReply(calls=[Call("lookup", {"order": "A-1"})]),  # then a tool call
    "It shipped yesterday.",                              # then a text answer
]
with OpenAICompatibleServer(script) as server:
    model = OpenAIModel("gpt-test", api_key="test", base_url=server.base_url)
    ...
    assert server.requests[1]["messages"][0]["role"] == "system"
```

Each request gets the next response of the script, whichever client sent it (a retried request
is a new request). A request beyond the end of the script is answered by the server's `rules`,
if it has any, else with HTTP 400 saying so.

For faults at random, give `rules` instead of (or after) a script: a function of the request
body that returns the response, so a fault suite decides each answer from the request and a
seed. `Hang(seconds)` holds a request that long before answering, to test client timeouts:

```python
def rules(request: Mapping[str, Any]) -> ScriptItem:
    if "slow" in json.dumps(request["messages"]):
        return Hang(30.0)                   # longer than the client's timeout
    return "Fine."

with OpenAICompatibleServer(rules=rules) as server:
    ...
```

Both servers stream (server-sent events, as the real APIs do) when the request asks for it, and
record every request body in `requests`. Each runs uvicorn in a background thread, on an
ephemeral port bound before the thread starts, and stops when its `with` block ends.
"""

from __future__ import annotations

import asyncio
import json
import math
import socket
import threading
from collections.abc import AsyncIterator, Callable, Iterable, Mapping, Sequence
from dataclasses import dataclass
from types import TracebackType
from typing import Any, ClassVar, Self

import uvicorn
from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import JSONResponse, Response, StreamingResponse
from starlette.routing import Route

from corral.models.scripted import Call

_CREATED = 1_700_000_000
"""The `created` timestamp of every OpenAI response (fixed, so responses are reproducible)."""
_DEADLINE = 10.0
"""Seconds a server may take to start or to stop before that is an error."""
_HOLD_STEP = 0.05
"""Seconds between two looks at whether the server is stopping, while a `Hang` holds a request."""


@dataclass(frozen=True)
class ServerReply:
    """A successful answer: text, tool calls, or both, and the token counts to report.

    A call whose `arguments` is a str is sent verbatim (the OpenAI server can send malformed
    JSON that way; the Anthropic API sends tool input as an object, so there it must be JSON).
    `finish_reason` None means the API's usual one: a tool-call reason when there are calls.
    """

    text: str = ""
    calls: Sequence[Call] = ()
    input_tokens: int = 11
    output_tokens: int = 7
    finish_reason: str | None = None


@dataclass(frozen=True)
class ServerFailure:
    """An HTTP error in the API's own error format (429, 500, 401...).

    `retry_after` is sent as `Retry-After` (seconds) and `retry-after-ms`, which both SDKs read
    first; it is at least 1 ms, because the SDKs take 0 as no advice and back off for about
    half a second instead.
    """

    status: int
    message: str = ""
    retry_after: float = 0.0


@dataclass(frozen=True)
class RawBody:
    """A body sent exactly as given (a mapping is JSON-encoded), whatever the request asked:
    a malformed answer, or any answer the other items cannot express."""

    body: str | Mapping[str, Any]
    status: int = 200
    content_type: str = "application/json"


Answer = ServerReply | ServerFailure | RawBody | str
"""What a server sends back; a str is a `ServerReply` with that text."""


@dataclass(frozen=True)
class Hang:
    """Hold the request for `seconds`, then send `then` (None: an HTTP 504).

    A client whose timeout is shorter gives up first: this is how a test makes a model call
    hang. A held request is let go at once when the server stops (answered with a 503), so a
    long hang never delays the end of a test.
    """

    seconds: float
    then: Answer | None = None


ScriptItem = Answer | Hang
"""One response of a script (or of `rules`); a str is a `ServerReply` with that text."""

Rules = Callable[[Mapping[str, Any]], ScriptItem]
"""Decides the response to a request from its JSON body (called on the server's thread)."""

_Item = ServerReply | ServerFailure | RawBody | Hang


def _item(item: ScriptItem) -> _Item:
    return ServerReply(item) if isinstance(item, str) else item


class _Uvicorn(uvicorn.Server):
    """A uvicorn server that says (across threads) when it is ready to serve."""

    def __init__(self, config: uvicorn.Config) -> None:
        super().__init__(config)
        self.ready = threading.Event()

    async def startup(self, sockets: list[socket.socket] | None = None) -> None:
        await super().startup(sockets=sockets)
        self.ready.set()


class _CompatibleServer:
    """The server machinery; subclasses say how their API's answers look."""

    api_path: ClassVar[str]
    """The path the API's client posts requests to."""
    base_path: ClassVar[str]
    """What the SDK's `base_url` ends with (the SDK adds the rest of `api_path`)."""

    def __init__(self, script: Iterable[ScriptItem] = (), *, rules: Rules | None = None) -> None:
        self.script: list[_Item] = [_item(item) for item in script]
        self.rules = rules
        """Answers the requests after the script's (None: those get an HTTP 400)."""
        self.requests: list[dict[str, Any]] = []
        """Every request body received, in order (retries included)."""
        self.rule_errors: list[str] = []
        """What `rules` raised, if it ever did (such a request gets an HTTP 400 saying so)."""
        self._stopping = threading.Event()
        self._lock = threading.Lock()
        self._socket: socket.socket | None = None
        self._port: int | None = None
        self._server: _Uvicorn | None = None
        self._thread: threading.Thread | None = None

    @property
    def url(self) -> str:
        """`http://127.0.0.1:<port>` (still known after the server has stopped)."""
        if self._port is None:
            raise RuntimeError(f"{type(self).__name__} has not started: use it in a with block")
        return f"http://127.0.0.1:{self._port}"

    @property
    def base_url(self) -> str:
        """The URL to give the SDK (or Corral's client) as its `base_url`."""
        return self.url + self.base_path

    def __enter__(self) -> Self:
        # Bound and listening before the thread starts: the port is known at once, and a
        # client that connects early waits in the backlog rather than being refused.
        sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
        sock.bind(("127.0.0.1", 0))
        sock.listen(64)
        self._stopping.clear()
        self._socket = sock
        self._port = sock.getsockname()[1]
        app = Starlette(routes=[Route(self.api_path, self._handle, methods=["POST"])])
        config = uvicorn.Config(
            app,
            log_config=None,
            log_level="warning",
            access_log=False,
            lifespan="off",
            loop="asyncio",
            http="h11",
            ws="none",
            timeout_graceful_shutdown=int(_DEADLINE),
        )
        self._server = _Uvicorn(config)
        self._thread = threading.Thread(
            target=self._server.run,
            kwargs={"sockets": [sock]},
            name=f"{type(self).__name__}:{self._port}",
            daemon=True,
        )
        self._thread.start()
        if not self._server.ready.wait(_DEADLINE):
            self._stop()
            raise RuntimeError(f"{type(self).__name__} did not start within {_DEADLINE} s")
        return self

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        traceback: TracebackType | None,
    ) -> None:
        self._stop()

    def _stop(self) -> None:
        self._stopping.set()  # held requests are let go: uvicorn waits for them to end
        if self._server is not None:
            self._server.should_exit = True
        if self._thread is not None:
            self._thread.join(_DEADLINE)
            if self._thread.is_alive():
                raise RuntimeError(f"{type(self).__name__} did not stop within {_DEADLINE} s")
        if self._socket is not None:
            self._socket.close()
        self._server = self._thread = None

    async def _handle(self, request: Request) -> Response:
        body = await request.json()
        with self._lock:
            self.requests.append(body)
            number = len(self.requests)
        if number <= len(self.script):
            item = self.script[number - 1]
        elif self.rules is not None:
            try:
                item = _item(self.rules(body))
            except Exception as error:
                # A bug in a test's rules: a 400 (never retried) that says so, kept for the test.
                problem = f"{type(self).__name__}: rules raised {type(error).__name__}: {error}"
                with self._lock:
                    self.rule_errors.append(problem)
                return JSONResponse(self.error_body(400, problem), status_code=400)
        else:
            return JSONResponse(
                self.error_body(
                    400,
                    f"{type(self).__name__}: request {number} has no response: the script has "
                    f"{len(self.script)}",
                ),
                status_code=400,
            )
        if isinstance(item, Hang):
            item = await self._hold(item)
        return self._respond(item, number, body)

    async def _hold(self, hang: Hang) -> ServerReply | ServerFailure | RawBody:
        """Wait out `hang` (or until the server stops); what to answer then."""
        loop = asyncio.get_running_loop()
        until = loop.time() + hang.seconds
        while not self._stopping.is_set():
            left = until - loop.time()
            if left <= 0:
                if hang.then is None:
                    return ServerFailure(504, f"held for {hang.seconds:g}s")
                answer = _item(hang.then)
                assert not isinstance(answer, Hang)
                return answer
            await asyncio.sleep(min(left, _HOLD_STEP))
        return ServerFailure(503, "the server is stopping")

    def _respond(
        self, item: ServerReply | ServerFailure | RawBody, number: int, body: dict[str, Any]
    ) -> Response:
        if isinstance(item, RawBody):
            text = item.body if isinstance(item.body, str) else json.dumps(item.body)
            return Response(text, status_code=item.status, media_type=item.content_type)
        if isinstance(item, ServerFailure):
            retry_ms = max(1, round(item.retry_after * 1000))
            return JSONResponse(
                self.error_body(item.status, item.message or f"scripted HTTP {item.status}"),
                status_code=item.status,
                headers={
                    "retry-after": str(math.ceil(item.retry_after)),
                    "retry-after-ms": str(retry_ms),
                },
            )
        model = str(body.get("model", ""))
        if body.get("stream"):
            events = self.stream_events(item, number, model, body)
            return StreamingResponse(_sse(events), media_type="text/event-stream")
        return JSONResponse(self.reply_body(item, number, model))

    # What subclasses provide: their API's shapes.

    def error_body(self, status: int, message: str) -> dict[str, Any]:
        raise NotImplementedError

    def reply_body(self, reply: ServerReply, number: int, model: str) -> dict[str, Any]:
        raise NotImplementedError

    def stream_events(
        self, reply: ServerReply, number: int, model: str, request: Mapping[str, Any]
    ) -> list[str]:
        """The stream's server-sent events, each already formatted (ending in a blank line)."""
        raise NotImplementedError


async def _sse(events: list[str]) -> AsyncIterator[str]:
    for event in events:
        yield event
        # Let each event go out as its own chunk, as a real server's would.
        await asyncio.sleep(0)


def _data(payload: Mapping[str, Any] | str, event: str | None = None) -> str:
    data = payload if isinstance(payload, str) else json.dumps(payload)
    prefix = f"event: {event}\n" if event else ""
    return f"{prefix}data: {data}\n\n"


def _arguments_text(call: Call) -> str:
    if isinstance(call.arguments, str):
        return call.arguments
    return json.dumps(dict(call.arguments))


def _halves(text: str) -> list[str]:
    """`text` in two pieces, so a client has to put streamed fragments back together."""
    middle = len(text) // 2
    return [piece for piece in (text[:middle], text[middle:]) if piece]


def _words(text: str) -> list[str]:
    """`text` as streamed pieces: each word with the space before it."""
    words = text.split(" ")
    pieces = [word if position == 0 else f" {word}" for position, word in enumerate(words)]
    return [piece for piece in pieces if piece]


class OpenAICompatibleServer(_CompatibleServer):
    """An OpenAI Chat Completions server (`POST /v1/chat/completions`) playing a script.

    Tool calls get the ids `call_<request>_<position>` (both from 1).
    """

    api_path = "/v1/chat/completions"
    base_path = "/v1"

    def error_body(self, status: int, message: str) -> dict[str, Any]:
        kinds = {401: "invalid_request_error", 429: "rate_limit_exceeded"}
        kind = kinds.get(status, "server_error")
        return {"error": {"message": message, "type": kind, "param": None, "code": str(status)}}

    def reply_body(self, reply: ServerReply, number: int, model: str) -> dict[str, Any]:
        message: dict[str, Any] = {"role": "assistant", "content": reply.text or None}
        if reply.calls:
            message["tool_calls"] = [
                {
                    "id": _call_id("call", number, position),
                    "type": "function",
                    "function": {"name": call.name, "arguments": _arguments_text(call)},
                }
                for position, call in enumerate(reply.calls, start=1)
            ]
        return {
            **self._envelope(number, model, "chat.completion"),
            "choices": [
                {"index": 0, "message": message, "finish_reason": self._finish_reason(reply)}
            ],
            "usage": self._usage(reply),
        }

    def stream_events(
        self, reply: ServerReply, number: int, model: str, request: Mapping[str, Any]
    ) -> list[str]:
        envelope = self._envelope(number, model, "chat.completion.chunk")

        def chunk(delta: dict[str, Any], finish_reason: str | None = None) -> str:
            choice = {"index": 0, "delta": delta, "finish_reason": finish_reason}
            return _data({**envelope, "choices": [choice]})

        events = [chunk({"role": "assistant", "content": ""})]
        events.extend(chunk({"content": piece}) for piece in _words(reply.text))
        for index, call in enumerate(reply.calls):
            start = {
                "index": index,
                "id": _call_id("call", number, index + 1),
                "type": "function",
                "function": {"name": call.name, "arguments": ""},
            }
            events.append(chunk({"tool_calls": [start]}))
            events.extend(
                chunk({"tool_calls": [{"index": index, "function": {"arguments": piece}}]})
                for piece in _halves(_arguments_text(call))
            )
        events.append(chunk({}, self._finish_reason(reply)))
        options = request.get("stream_options") or {}
        if options.get("include_usage"):
            events.append(_data({**envelope, "choices": [], "usage": self._usage(reply)}))
        events.append(_data("[DONE]"))
        return events

    @staticmethod
    def _envelope(number: int, model: str, kind: str) -> dict[str, Any]:
        return {"id": f"chatcmpl-{number}", "object": kind, "created": _CREATED, "model": model}

    @staticmethod
    def _finish_reason(reply: ServerReply) -> str:
        return reply.finish_reason or ("tool_calls" if reply.calls else "stop")

    @staticmethod
    def _usage(reply: ServerReply) -> dict[str, int]:
        return {
            "prompt_tokens": reply.input_tokens,
            "completion_tokens": reply.output_tokens,
            "total_tokens": reply.input_tokens + reply.output_tokens,
        }


class AnthropicCompatibleServer(_CompatibleServer):
    """An Anthropic Messages server (`POST /v1/messages`) playing a script.

    Tool calls get the ids `toolu_<request>_<position>` (both from 1).
    """

    api_path = "/v1/messages"
    base_path = ""

    def __init__(self, script: Iterable[ScriptItem] = (), *, rules: Rules | None = None) -> None:
        super().__init__(script, rules=rules)
        for item in self.script:  # fail here, not as an HTTP 500 in the middle of a test
            answer = _item(item.then) if isinstance(item, Hang) and item.then else item
            if isinstance(answer, ServerReply):
                for call in answer.calls:
                    _tool_input(call)

    def error_body(self, status: int, message: str) -> dict[str, Any]:
        kind = {
            400: "invalid_request_error",
            401: "authentication_error",
            429: "rate_limit_error",
            529: "overloaded_error",
        }.get(status, "api_error")
        return {"type": "error", "error": {"type": kind, "message": message}}

    def reply_body(self, reply: ServerReply, number: int, model: str) -> dict[str, Any]:
        content: list[dict[str, Any]] = []
        if reply.text:
            content.append({"type": "text", "text": reply.text})
        content.extend(
            {
                "type": "tool_use",
                "id": _call_id("toolu", number, position),
                "name": call.name,
                "input": _tool_input(call),
            }
            for position, call in enumerate(reply.calls, start=1)
        )
        return {
            **self._message(number, model),
            "content": content,
            "stop_reason": self._stop_reason(reply),
            "usage": {"input_tokens": reply.input_tokens, "output_tokens": reply.output_tokens},
        }

    def stream_events(
        self, reply: ServerReply, number: int, model: str, request: Mapping[str, Any]
    ) -> list[str]:
        def event(kind: str, **payload: Any) -> str:
            return _data({"type": kind, **payload}, event=kind)

        start = {
            **self._message(number, model),
            "content": [],
            "stop_reason": None,
            "usage": {"input_tokens": reply.input_tokens, "output_tokens": 1},
        }
        events = [event("message_start", message=start), event("ping")]
        index = 0
        if reply.text:
            text_block = {"type": "text", "text": ""}
            events.append(event("content_block_start", index=index, content_block=text_block))
            events.extend(
                event(
                    "content_block_delta",
                    index=index,
                    delta={"type": "text_delta", "text": piece},
                )
                for piece in _words(reply.text)
            )
            events.append(event("content_block_stop", index=index))
            index += 1
        for position, call in enumerate(reply.calls, start=1):
            block = {
                "type": "tool_use",
                "id": _call_id("toolu", number, position),
                "name": call.name,
                "input": {},
            }
            events.append(event("content_block_start", index=index, content_block=block))
            events.extend(
                event(
                    "content_block_delta",
                    index=index,
                    delta={"type": "input_json_delta", "partial_json": piece},
                )
                for piece in _halves(json.dumps(_tool_input(call)))
            )
            events.append(event("content_block_stop", index=index))
            index += 1
        events.append(
            event(
                "message_delta",
                delta={"stop_reason": self._stop_reason(reply), "stop_sequence": None},
                usage={"output_tokens": reply.output_tokens},
            )
        )
        events.append(event("message_stop"))
        return events

    @staticmethod
    def _message(number: int, model: str) -> dict[str, Any]:
        return {
            "id": f"msg_{number}",
            "type": "message",
            "role": "assistant",
            "model": model,
            "stop_sequence": None,
        }

    @staticmethod
    def _stop_reason(reply: ServerReply) -> str:
        return reply.finish_reason or ("tool_use" if reply.calls else "end_turn")


def _call_id(prefix: str, number: int, position: int) -> str:
    return f"{prefix}_{number}_{position}"


def _tool_input(call: Call) -> Any:
    if isinstance(call.arguments, str):
        try:
            return json.loads(call.arguments)
        except json.JSONDecodeError as error:
            raise ValueError(
                f"AnthropicCompatibleServer: the arguments of call {call.name!r} must be JSON "
                f"(the Messages API sends tool input as an object): {error}"
            ) from error
    return dict(call.arguments)
