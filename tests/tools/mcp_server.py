"""A tiny MCP server for the MCP toolset tests, built with the SDK's `MCPServer`.

Run as `python mcp_server.py` it serves stdio. Run as `python mcp_server.py --http` it serves
streamable HTTP on 127.0.0.1 at an ephemeral port, prints `port=<n>` on stdout once it listens,
and exits when its stdin closes, so a test that dies cannot leave it running.
"""

from __future__ import annotations

import os
import socket
import sys
import threading
from typing import Any

import anyio
from mcp.server.mcpserver import Context, MCPServer
from mcp.server.mcpserver.exceptions import ToolError

server = MCPServer("corral-test", log_level="WARNING")

_arrived: dict[str, int] = {}
_all_arrived: dict[str, anyio.Event] = {}


@server.tool()
def add(a: int, b: int) -> int:
    """Add two numbers."""
    return a + b


@server.tool(structured_output=False)
def shout(text: str) -> list[str]:
    """Upper-case a text, as two text blocks (no structured content)."""
    return [text.upper(), "!"]


@server.tool()
def echo_meta(ctx: Context) -> dict[str, Any]:
    """The `_meta` of this request, as the server received it."""
    return dict(ctx.request_context.meta or {})


@server.tool()
def echo_header(name: str, ctx: Context) -> str:
    """One HTTP header of this request (empty over stdio or when absent)."""
    return (ctx.headers or {}).get(name.lower(), "")


@server.tool()
def fail(reason: str = "the tool broke") -> str:
    """Always fails with an error result."""
    raise ToolError(reason)


@server.tool()
def delete_everything() -> str:
    """A dangerous tool, for risk overrides."""
    return "deleted"


@server.tool()
def pid() -> int:
    """This server's process id."""
    return os.getpid()


@server.tool()
async def gather(n: int, key: str) -> int:
    """Return only once `n` calls with this `key` are in flight at the same time."""
    _arrived[key] = _arrived.get(key, 0) + 1
    everyone = _all_arrived.setdefault(key, anyio.Event())
    if _arrived[key] >= n:
        everyone.set()
    with anyio.fail_after(10):  # a deadline, so a missing concurrent call fails the test
        await everyone.wait()
    return _arrived[key]


def _serve_http() -> None:
    import uvicorn

    listener = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
    listener.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    listener.bind(("127.0.0.1", 0))
    listener.listen(128)  # connections made before uvicorn accepts wait in the backlog
    app = server.streamable_http_app(host="127.0.0.1")
    config = uvicorn.Config(app, log_level="warning", lifespan="on")
    http = uvicorn.Server(config)

    def exit_when_stdin_closes() -> None:
        sys.stdin.buffer.read()
        http.should_exit = True

    threading.Thread(target=exit_when_stdin_closes, daemon=True).start()
    print(f"port={listener.getsockname()[1]}", flush=True)
    http.run(sockets=[listener])


if __name__ == "__main__":
    if "--http" in sys.argv:
        _serve_http()
    else:
        server.run("stdio")
