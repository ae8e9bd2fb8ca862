"""Tools from an MCP server, over stdio or streamable HTTP, as a Corral `Toolset`.

```python
github = MCPToolset.stdio(
    "github", "npx", ["-y", "@modelcontextprotocol/server-github"],
    env={"GITHUB_TOKEN": token}, prefix="github", tool_risk={"delete_repository": "high"},
)
search = MCPToolset.http("search", "https://search.internal/mcp", headers={"Authorization": auth})
...
await github.aclose()  # or: async with github: ...
```

MCP tools say nothing of Corral's risk and scopes, so the toolset gives every tool `risk` and
`scopes`, and `tool_risk` / `tool_scopes` / `at_most_once_tools` override them per tool (keys are
the server's tool names). A name in those options, or in `allowed_tools`, that the server does
not offer is an error when the tools are listed: a misspelt `tool_risk` key would otherwise leave
a dangerous tool at low risk without anyone noticing.

Each call carries the call's idempotency key, run id and redelivery flag in the request's
`_meta` (`corral/idempotency_key`, `corral/run_id`, `corral/redelivered`), so a server that cares
can drop a call it has already served.

Connection lifecycle. The SDK's transports and sessions are anyio task groups: they must be
exited by the task that entered them, and a transport that fails (the HTTP server went away)
cancels the task that holds it. So neither the caller of `call_tool` nor a shared "current task"
may hold the session. One session per operation would be correct but would start a server
process for every stdio call and lose any state the server keeps between calls. Instead each
toolset has at most one connection, owned by one asyncio task that enters the SDK `Client`,
takes operations from a queue and runs each in a child task of its own task group (so
concurrent calls are concurrent JSON-RPC requests on one session), and exits the `Client`
itself. Callers only wait on futures. When the transport fails, the owner's task group is
cancelled, the owner sets a clear error on every pending future and ends; the next operation
opens a new connection. The connection is opened lazily by the first operation (a replayed
run whose tool list and calls are all in the journal never starts the server) and `aclose()`
ends it: in-flight calls fail, the stdio server process is stopped (the SDK closes its stdin,
then terminates its process group), and no task is left behind. A connection belongs to the
event loop that opened it; `aclose()` it on that loop before the loop ends.
"""

from __future__ import annotations

import asyncio
import math
import re
import sys
from collections.abc import AsyncIterator, Awaitable, Callable, Iterable, Mapping, Sequence
from contextlib import asynccontextmanager
from dataclasses import dataclass, field
from importlib import metadata
from typing import Any, TypeVar, cast, get_args

import anyio
import httpx2
from mcp import Client, StdioServerParameters
from mcp.client.stdio import stdio_client
from mcp.client.streamable_http import streamable_http_client
from mcp.shared.exceptions import MCPError
from mcp.types import (
    CONNECTION_CLOSED,
    REQUEST_TIMEOUT,
    CallToolResult,
    EmbeddedResource,
    Implementation,
    RequestParamsMeta,
    TextContent,
    TextResourceContents,
)
from mcp.types import Tool as MCPTool

from corral.errors import (
    AgentDefinitionError,
    CorralError,
    ToolFailed,
    UnknownTool,
    UsageError,
)
from corral.tools.context import ToolContext
from corral.tools.tool import Risk, ToolDefinition

__all__ = ["MCPToolset"]

T = TypeVar("T")

_TOOL_NAME = re.compile(r"[A-Za-z0-9_-]{1,64}")
"""What model providers accept as a function name (the same rule as `corral.tools.tool`)."""
_PREFIX = re.compile(r"[A-Za-z0-9_-]{1,32}")
_LIST_PAGE_LIMIT = 100
"""Pages of `tools/list` to follow: a server whose cursor never ends cannot hang a run."""


@dataclass(frozen=True)
class _StdioServer:
    command: str
    args: tuple[str, ...]
    env: Mapping[str, str] | None
    cwd: str | None

    def describe(self) -> str:
        return f"command {' '.join([self.command, *self.args])!r}"


@dataclass(frozen=True)
class _HTTPServer:
    url: str
    headers: Mapping[str, str] = field(repr=False)  # they often hold credentials

    def describe(self) -> str:
        return f"URL {self.url}"


class MCPToolset:
    """The tools of one MCP server. Build one with `MCPToolset.stdio` or `MCPToolset.http`."""

    def __init__(
        self,
        name: str,
        *,
        server: _StdioServer | _HTTPServer,
        risk: Risk = "low",
        scopes: Iterable[str] = (),
        tool_risk: Mapping[str, Risk] | None = None,
        tool_scopes: Mapping[str, Iterable[str]] | None = None,
        at_most_once_tools: Iterable[str] = (),
        prefix: str | None = None,
        allowed_tools: Iterable[str] | None = None,
        timeout: float | None = None,
        connect_timeout: float = 30.0,
    ) -> None:
        if not name:
            raise AgentDefinitionError("an MCP toolset needs a non-empty name")
        if prefix is not None and not _PREFIX.fullmatch(prefix):
            raise AgentDefinitionError(
                f"MCP toolset {name!r}: prefix {prefix!r} must be 1-32 letters, digits, '_' or '-'",
                toolset=name,
            )
        tool_risk = dict(tool_risk or {})
        valid_risks = get_args(Risk)
        for tool_name, value in [("(default)", risk), *tool_risk.items()]:
            if value not in valid_risks:
                raise AgentDefinitionError(
                    f"MCP toolset {name!r}: risk {value!r} for {tool_name} is not one of "
                    f"{', '.join(valid_risks)}",
                    toolset=name,
                )
        for option, seconds in [("timeout", timeout), ("connect_timeout", connect_timeout)]:
            if seconds is not None and not seconds > 0:
                raise AgentDefinitionError(
                    f"MCP toolset {name!r}: {option} must be a positive number of seconds",
                    toolset=name,
                )
        self.name = name
        self.prefix = prefix
        self._server = server
        self._risk: Risk = risk
        self._scopes = tuple(scopes)
        self._tool_risk: dict[str, Risk] = tool_risk
        self._tool_scopes = {tool: tuple(s) for tool, s in (tool_scopes or {}).items()}
        self._at_most_once = frozenset(at_most_once_tools)
        self._allowed = None if allowed_tools is None else frozenset(allowed_tools)
        self._timeout = timeout
        self._connect_timeout = connect_timeout
        self._connection: _Connection | None = None
        self._retiring: set[_Connection] = set()
        """Connections told to close whose owner task may not have ended yet; aclose waits."""

    @classmethod
    def stdio(
        cls,
        name: str,
        command: str,
        args: Sequence[str] = (),
        env: Mapping[str, str] | None = None,
        *,
        cwd: str | None = None,
        risk: Risk = "low",
        scopes: Iterable[str] = (),
        tool_risk: Mapping[str, Risk] | None = None,
        tool_scopes: Mapping[str, Iterable[str]] | None = None,
        at_most_once_tools: Iterable[str] = (),
        prefix: str | None = None,
        allowed_tools: Iterable[str] | None = None,
        timeout: float | None = None,
        connect_timeout: float = 30.0,
    ) -> MCPToolset:
        """An MCP server started as a subprocess and spoken to over its stdin and stdout.

        Args:
            name: The toolset's name, used in errors and logs.
            command: The executable, e.g. `npx` or `sys.executable`.
            args: Its arguments.
            env: Variables set for the server, over the few the SDK passes on (HOME, PATH,
                SHELL, TERM, USER, LOGNAME): the server does not inherit the whole environment.
            cwd: The server's working directory; this process's by default.
            risk: The risk of every tool, unless `tool_risk` names it.
            scopes: The scopes every tool needs, unless `tool_scopes` names it.
            tool_risk: Risk per tool, by the server's tool name, e.g. `{"delete": "high"}`.
            tool_scopes: Scopes per tool, by the server's tool name.
            at_most_once_tools: The server's tools that must never be called twice.
            prefix: Prepended to tool names with `_` (`github` makes `github_create_issue`), so
                tools of two servers cannot clash.
            allowed_tools: Offer only these of the server's tools (by the server's names).
            timeout: Seconds to wait for each response; no limit by default.
            connect_timeout: Seconds to wait for the server to start and answer the handshake.
        """
        return cls(
            name,
            server=_StdioServer(command, tuple(args), dict(env) if env else None, cwd),
            risk=risk,
            scopes=scopes,
            tool_risk=tool_risk,
            tool_scopes=tool_scopes,
            at_most_once_tools=at_most_once_tools,
            prefix=prefix,
            allowed_tools=allowed_tools,
            timeout=timeout,
            connect_timeout=connect_timeout,
        )

    @classmethod
    def http(
        cls,
        name: str,
        url: str,
        headers: Mapping[str, str] | None = None,
        *,
        risk: Risk = "low",
        scopes: Iterable[str] = (),
        tool_risk: Mapping[str, Risk] | None = None,
        tool_scopes: Mapping[str, Iterable[str]] | None = None,
        at_most_once_tools: Iterable[str] = (),
        prefix: str | None = None,
        allowed_tools: Iterable[str] | None = None,
        timeout: float | None = None,
        connect_timeout: float = 30.0,
    ) -> MCPToolset:
        """An MCP server reached over streamable HTTP at `url` (e.g. `http://host:8000/mcp`).

        Args:
            name: The toolset's name, used in errors and logs.
            url: The server's MCP endpoint.
            headers: Sent with every request, e.g. `{"Authorization": "Bearer ..."}`; never
                shown in errors or reprs.
            risk: See `MCPToolset.stdio`; the other options are the same too.
        """
        if not url.startswith(("http://", "https://")):
            raise AgentDefinitionError(
                f"MCP toolset {name!r}: URL {url!r} must start with http:// or https://",
                toolset=name,
            )
        return cls(
            name,
            server=_HTTPServer(url, dict(headers or {})),
            risk=risk,
            scopes=scopes,
            tool_risk=tool_risk,
            tool_scopes=tool_scopes,
            at_most_once_tools=at_most_once_tools,
            prefix=prefix,
            allowed_tools=allowed_tools,
            timeout=timeout,
            connect_timeout=connect_timeout,
        )

    def __repr__(self) -> str:
        return f"MCPToolset({self.name!r}, {self._server.describe()})"

    async def __aenter__(self) -> MCPToolset:
        return self

    async def __aexit__(self, *exc_info: object) -> None:
        await self.aclose()

    # -- the Toolset protocol ------------------------------------------------------------------

    async def list_tools(self) -> list[ToolDefinition]:
        """The server's tools (after `allowed_tools`), named with the prefix, with risk and scopes.

        Raises:
            AgentDefinitionError: An option names a tool the server does not offer, or a tool's
                name (with the prefix) is not one model providers accept.
            ToolFailed: The server could not be reached or answered with an error.
            UsageError: The server command could not be started.
        """
        tools = await self._submit(_list_all_tools, action="list the tools of")
        offered = {tool.name for tool in tools}
        self._check_names_exist(offered)
        definitions = []
        for tool in tools:
            if self._allowed is not None and tool.name not in self._allowed:
                continue
            definitions.append(self._definition(tool))
        return definitions

    async def call_tool(self, name: str, arguments: dict[str, Any], context: ToolContext) -> Any:
        """Call tool `name` (as `list_tools` named it) on the server.

        Returns:
            The result's structured content when the server sent some, else its text content
            joined with newlines.

        Raises:
            UnknownTool: `name` is not one of this toolset's tool names.
            ToolFailed: The server reported an error (`isError`) or the call could not be made.
            UsageError: The server command could not be started.
        """
        server_name = self._server_tool_name(name)
        meta: dict[str, Any] = {
            "corral/idempotency_key": context.idempotency_key,
            "corral/run_id": context.run_id,
            "corral/redelivered": context.redelivered,
        }

        async def call(client: Client) -> CallToolResult:
            return await client.call_tool(
                server_name, arguments, meta=cast(RequestParamsMeta, meta)
            )

        result = await self._submit(call, action=f"call tool {name!r} on", tool=name)
        if result.is_error:
            text = _content_text(result) or "(the server gave no message)"
            raise ToolFailed(
                f"tool {name!r} of MCP server {self.name!r} failed: {text}",
                tool=name,
                toolset=self.name,
            )
        if result.structured_content is not None:
            return result.structured_content
        return _content_text(result)

    async def aclose(self) -> None:
        """End the connection, if any: in-flight calls fail, a stdio server process is stopped.

        The toolset can be used again afterwards; the next operation opens a new connection.
        """
        connections = {old for old in self._retiring if not old.task.done()}
        if self._connection is not None and not self._connection.task.done():
            connections.add(self._connection)
        for connection in connections:
            connection.check_loop(self.name)
        self._connection = None
        self._retiring.clear()
        for connection in connections:
            connection.close()
        if connections:
            # wait() rather than await: a caller cancelled here must not cancel the shutdown,
            # and an owner task that ended with CancelledError is not this caller's error.
            await asyncio.wait({connection.task for connection in connections})

    # -- internals -----------------------------------------------------------------------------

    async def _submit(
        self, run: Callable[[Client], Awaitable[T]], *, action: str, tool: str | None = None
    ) -> T:
        """Run `run` on the live connection (opened now if there is none); errors made Corral's."""
        self._retiring = {old for old in self._retiring if not old.task.done()}
        connection = self._connection
        if connection is not None and connection.task.done():
            connection = None  # it has ended (maybe with its event loop): open a new one
        if connection is not None:
            connection.check_loop(self.name)
            if connection.closing:  # the server went away: a new connection, the old one ends
                if not connection.task.done():
                    self._retiring.add(connection)
                connection = None
        if connection is None:
            connection = self._connection = _Connection(self)
        ids: dict[str, Any] = {"toolset": self.name} | ({"tool": tool} if tool else {})
        try:
            return await connection.submit(run)
        except CorralError:
            raise
        except MCPError as exc:
            if exc.code == REQUEST_TIMEOUT:
                message = f"did not answer within {self._timeout} s when asked to {action} it"
            elif exc.code == CONNECTION_CLOSED:
                message = (
                    f"({self._server.describe()}) closed the connection when asked to {action} "
                    "it; the next call reconnects"
                )
            else:
                message = f"answered with an error when asked to {action} it: {exc.message}"
            raise ToolFailed(
                f"MCP server {self.name!r} {message}", mcp_code=exc.code, **ids
            ) from None
        except Exception as exc:
            raise ToolFailed(
                f"MCP server {self.name!r}: could not {action} it: {type(exc).__name__}: {exc}",
                **ids,
            ) from exc

    def _client(self) -> Client:
        info = Implementation(name="corral", version=_corral_version())
        server = self._server
        if isinstance(server, _StdioServer):
            parameters = StdioServerParameters(
                command=server.command,
                args=list(server.args),
                env=dict(server.env) if server.env else None,
                cwd=server.cwd,
            )
            # The server's stderr (its tracebacks) goes to ours, chosen now rather than when
            # the SDK was imported (test runners swap sys.stderr).
            transport = stdio_client(parameters, errlog=sys.stderr)
        else:
            transport = _http_transport(server.url, server.headers)
        # cache=None: the tool list is read once per agent run and journaled; a cached list
        # could hide a server's change from the next run.
        return Client(
            transport,
            client_info=info,
            read_timeout_seconds=self._timeout,
            cache=None,
        )

    def _connection_error(self, exc: BaseException, *, connected: bool) -> CorralError:
        """A Corral error saying what went wrong with the connection itself."""
        root = _root_cause(exc)
        where = self._server.describe()
        if isinstance(root, CorralError):
            return root
        if isinstance(self._server, _StdioServer) and isinstance(
            root, FileNotFoundError | PermissionError | NotADirectoryError
        ):
            return UsageError(
                f"MCP server {self.name!r}: cannot start {where}: "
                f"{root.strerror or type(root).__name__}",
                toolset=self.name,
            )
        if isinstance(root, httpx2.ConnectError | httpx2.ConnectTimeout):
            return ToolFailed(
                f"MCP server {self.name!r} at {self._server.describe()} is unreachable: {root}",
                toolset=self.name,
            )
        if isinstance(root, MCPError) and root.code == CONNECTION_CLOSED and not connected:
            return ToolFailed(
                f"MCP server {self.name!r} ({where}) closed the connection before the MCP "
                "handshake finished (did it exit? its stderr may say why)",
                toolset=self.name,
            )
        detail = str(root) or type(root).__name__
        state = "the connection to" if connected else "cannot connect to"
        return ToolFailed(
            f"{state} MCP server {self.name!r} ({where}) failed: {type(root).__name__}: {detail}",
            toolset=self.name,
        )

    def _definition(self, tool: MCPTool) -> ToolDefinition:
        exposed = tool.name if self.prefix is None else f"{self.prefix}_{tool.name}"
        if not _TOOL_NAME.fullmatch(exposed):
            raise AgentDefinitionError(
                f"MCP server {self.name!r} offers tool {tool.name!r}, whose name "
                f"{exposed!r} is not 1-64 letters, digits, '_' or '-' as model providers "
                "require; leave it out with allowed_tools",
                toolset=self.name,
                tool=tool.name,
            )
        return ToolDefinition(
            name=exposed,
            description=tool.description or tool.title or "",
            parameters=dict(tool.input_schema),
            risk=self._tool_risk.get(tool.name, self._risk),
            scopes=self._tool_scopes.get(tool.name, self._scopes),
            at_most_once=tool.name in self._at_most_once,
        )

    def _check_names_exist(self, offered: set[str]) -> None:
        options = {
            "allowed_tools": self._allowed or frozenset(),
            "tool_risk": self._tool_risk.keys(),
            "tool_scopes": self._tool_scopes.keys(),
            "at_most_once_tools": self._at_most_once,
        }
        for option, names in options.items():
            missing = sorted(set(names) - offered)
            if missing:
                raise AgentDefinitionError(
                    f"MCP toolset {self.name!r}: {option} names tools the server does not offer: "
                    f"{', '.join(missing)} (it offers: {', '.join(sorted(offered)) or 'none'})",
                    toolset=self.name,
                )

    def _server_tool_name(self, name: str) -> str:
        # Derived from the name alone, not from a listing: a replayed run calls tools whose
        # listing is in the journal, without listing them again in this process.
        server_name: str | None = name
        if self.prefix is not None:
            start = f"{self.prefix}_"
            server_name = name[len(start) :] if name.startswith(start) else None
        if not server_name or (self._allowed is not None and server_name not in self._allowed):
            raise UnknownTool(
                f"MCP toolset {self.name!r} has no tool {name!r}", tool=name, toolset=self.name
            )
        return server_name


@dataclass(eq=False)
class _Operation:
    run: Callable[[Client], Awaitable[Any]]
    future: asyncio.Future[Any]


class _Connection:
    """One MCP session, held by one owner task from its opening to its end (see module doc)."""

    def __init__(self, toolset: MCPToolset) -> None:
        self._toolset = toolset
        self.loop = asyncio.get_running_loop()
        self._queue: asyncio.Queue[_Operation | None] = asyncio.Queue()
        self._pending: set[_Operation] = set()
        self.closing = False
        self.task = self.loop.create_task(self._own(), name=f"corral-mcp-{toolset.name}")

    def check_loop(self, toolset: str) -> None:
        try:
            running = asyncio.get_running_loop()
        except RuntimeError:
            running = None
        if running is not self.loop:
            raise UsageError(
                f"MCP toolset {toolset!r} is connected on another event loop; await its "
                "aclose() on that loop before the loop ends, then use it on this one",
                toolset=toolset,
            )

    async def submit(self, run: Callable[[Client], Awaitable[T]]) -> T:
        operation = _Operation(run, self.loop.create_future())
        self._pending.add(operation)
        self._queue.put_nowait(operation)
        try:
            return cast(T, await operation.future)
        finally:
            self._pending.discard(operation)

    def close(self) -> None:
        if not self.closing:
            self.closing = True
            self._queue.put_nowait(None)

    async def _own(self) -> None:
        toolset = self._toolset
        failure: CorralError | None = None
        connected = False
        try:
            deadline = anyio.current_time() + toolset._connect_timeout
            with anyio.CancelScope(deadline=deadline) as handshake:
                async with toolset._client() as client:
                    connected = True
                    handshake.deadline = math.inf
                    async with anyio.create_task_group() as calls:
                        while (operation := await self._queue.get()) is not None:
                            calls.start_soon(self._serve, client, operation)
                        calls.cancel_scope.cancel()  # closing: calls still in flight fail
            if handshake.cancelled_caught:
                failure = ToolFailed(
                    f"MCP server {toolset.name!r} ({toolset._server.describe()}) did not finish "
                    f"the MCP handshake within {toolset._connect_timeout} s",
                    toolset=toolset.name,
                )
        except asyncio.CancelledError:
            failure = ToolFailed(
                f"the connection to MCP server {toolset.name!r} was cancelled",
                toolset=toolset.name,
            )
            raise
        except Exception as exc:
            failure = toolset._connection_error(exc, connected=connected)
        finally:
            self.closing = True
            if failure is None:
                failure = ToolFailed(
                    f"MCP toolset {toolset.name!r} was closed while the call was in flight",
                    toolset=toolset.name,
                )
            for operation in self._pending:
                if not operation.future.done():
                    # A fresh exception per caller: one raised in many tasks would collect
                    # all their tracebacks.
                    operation.future.set_exception(type(failure)(failure.message, **failure.ids))

    async def _serve(self, client: Client, operation: _Operation) -> None:
        if operation.future.done():  # the caller gave up before the call started
            return
        with anyio.CancelScope() as scope:
            # A caller that is cancelled cancels its future; that cancels the request too.
            operation.future.add_done_callback(lambda _: scope.cancel())
            try:
                result = await operation.run(client)
            except Exception as exc:
                if isinstance(exc, MCPError) and exc.code == CONNECTION_CLOSED:
                    self.close()  # the server is gone: the next operation opens a new connection
                if not operation.future.done():
                    operation.future.set_exception(exc)
                return
            if not operation.future.done():
                operation.future.set_result(result)


async def _list_all_tools(client: Client) -> list[MCPTool]:
    tools: list[MCPTool] = []
    cursor: str | None = None
    for _ in range(_LIST_PAGE_LIMIT):
        page = await client.list_tools(cursor=cursor)
        tools.extend(page.tools)
        cursor = page.next_cursor
        if cursor is None:
            break
    return tools


@asynccontextmanager
async def _http_transport(url: str, headers: Mapping[str, str]) -> AsyncIterator[Any]:
    """The SDK's streamable HTTP transport, over an HTTP client that sends `headers`."""
    # The SDK's own defaults: 30 s to connect or write, 300 s to read (responses may stream).
    timeout = httpx2.Timeout(30.0, read=300.0)
    async with (
        httpx2.AsyncClient(headers=dict(headers), timeout=timeout) as http,
        streamable_http_client(url, http_client=http) as streams,
    ):
        yield streams


def _content_text(result: CallToolResult) -> str:
    """The result's content as text: text blocks as they are, other blocks described."""
    parts: list[str] = []
    for block in result.content:
        if isinstance(block, TextContent):
            parts.append(block.text)
        elif isinstance(block, EmbeddedResource) and isinstance(
            block.resource, TextResourceContents
        ):
            parts.append(block.resource.text)
        else:
            # Images, audio and blobs would be base64 in the journal and the model's context.
            mime = getattr(block, "mime_type", None) or getattr(
                getattr(block, "resource", None), "mime_type", None
            )
            uri = getattr(block, "uri", None) or getattr(
                getattr(block, "resource", None), "uri", None
            )
            details = ", ".join(str(d) for d in (mime, uri) if d)
            parts.append(f"[{block.type} content{f': {details}' if details else ''}]")
    return "\n".join(parts)


def _root_cause(exc: BaseException) -> BaseException:
    """The error inside the SDK's task groups' exception groups, cancellations aside."""
    leaves: list[BaseException] = []
    pending = [exc]
    while pending:
        current = pending.pop(0)
        if isinstance(current, BaseExceptionGroup):
            pending.extend(current.exceptions)
        else:
            leaves.append(current)
    meaningful = [leaf for leaf in leaves if not isinstance(leaf, asyncio.CancelledError)]
    return (meaningful or leaves or [exc])[0]


def _corral_version() -> str:
    try:
        return metadata.version("corral")
    except metadata.PackageNotFoundError:
        return "0"
