"""MCPToolset against a real MCP server (tests/tools/mcp_server.py), over stdio and over HTTP."""

from __future__ import annotations

import asyncio
import os
import select
import signal
import socket
import subprocess
import sys
import time
import uuid
from collections.abc import AsyncIterator, Callable, Iterator
from pathlib import Path
from typing import Any

import pytest

from corral.errors import AgentDefinitionError, ToolFailed, UnknownTool, UsageError
from corral.tools import MCPToolset, ToolContext, Toolset

SERVER = str(Path(__file__).with_name("mcp_server.py"))
DEADLINE = 20.0

MakeToolset = Callable[..., MCPToolset]


def context(tool_name: str = "add", *, seq: int = 3) -> ToolContext:
    return ToolContext(
        run_id="run-1", step_seq=seq, idempotency_key=f"run-1:{seq}", tool_name=tool_name
    )


@pytest.fixture(scope="module")
def http_url() -> Iterator[str]:
    """The URL of the test server over streamable HTTP, started once for this module."""
    server = subprocess.Popen(
        [sys.executable, SERVER, "--http"], stdin=subprocess.PIPE, stdout=subprocess.PIPE
    )
    assert server.stdin is not None
    assert server.stdout is not None
    try:
        ready, _, _ = select.select([server.stdout], [], [], DEADLINE)
        line = server.stdout.readline().decode() if ready else ""
        assert line.startswith("port="), f"the HTTP test server did not start: {line!r}"
        yield f"http://127.0.0.1:{int(line.removeprefix('port='))}/mcp"
    finally:
        server.stdin.close()  # the server exits when its stdin closes
        try:
            server.wait(timeout=DEADLINE)
        except subprocess.TimeoutExpired:
            server.kill()
            server.wait()
        server.stdout.close()


@pytest.fixture(params=["stdio", "http"])
async def make_toolset(request: pytest.FixtureRequest) -> AsyncIterator[MakeToolset]:
    """A factory of toolsets on the test server over this test's transport; all closed after."""
    made: list[MCPToolset] = []
    url = request.getfixturevalue("http_url") if request.param == "http" else None

    def make(**options: Any) -> MCPToolset:
        if url is None:
            toolset = MCPToolset.stdio("test", sys.executable, [SERVER], **options)
        else:
            toolset = MCPToolset.http("test", url, **options)
        made.append(toolset)
        return toolset

    yield make
    for toolset in made:
        await toolset.aclose()


def owner_tasks() -> set[asyncio.Task[Any]]:
    return {task for task in asyncio.all_tasks() if task.get_name().startswith("corral-mcp-")}


async def test_is_a_toolset_listing_the_servers_tools_with_their_schemas(
    make_toolset: MakeToolset,
) -> None:
    toolset = make_toolset()
    assert isinstance(toolset, Toolset)
    tools = {tool.name: tool for tool in await toolset.list_tools()}
    assert {"add", "echo_meta", "fail", "gather"} <= set(tools)
    add = tools["add"]
    assert add.description == "Add two numbers."
    assert add.parameters["properties"]["a"]["type"] == "integer"
    assert sorted(add.parameters["required"]) == ["a", "b"]
    assert (add.risk, add.scopes, add.at_most_once) == ("low", (), False)


async def test_prefix_filter_and_risk_overrides(make_toolset: MakeToolset) -> None:
    toolset = make_toolset(
        prefix="srv",
        allowed_tools=["add", "delete_everything"],
        risk="medium",
        scopes=["test:read"],
        tool_risk={"delete_everything": "high"},
        tool_scopes={"delete_everything": ["test:delete"]},
        at_most_once_tools=["delete_everything"],
    )
    tools = {tool.name: tool for tool in await toolset.list_tools()}
    assert set(tools) == {"srv_add", "srv_delete_everything"}
    assert (tools["srv_add"].risk, tools["srv_add"].scopes) == ("medium", ("test:read",))
    dangerous = tools["srv_delete_everything"]
    assert (dangerous.risk, dangerous.scopes, dangerous.at_most_once) == (
        "high",
        ("test:delete",),
        True,
    )

    assert await toolset.call_tool("srv_add", {"a": 2, "b": 3}, context()) == {"result": 5}
    for name in ("add", "srv_echo_meta", "other_add"):
        with pytest.raises(UnknownTool, match=name):
            await toolset.call_tool(name, {}, context())


async def test_an_option_naming_a_tool_the_server_lacks_is_an_error(
    make_toolset: MakeToolset,
) -> None:
    # A misspelt override would otherwise leave a dangerous tool at the default risk.
    toolset = make_toolset(tool_risk={"delete_everythin": "high"})
    with pytest.raises(AgentDefinitionError, match=r"tool_risk names tools .*delete_everythin"):
        await toolset.list_tools()


def test_bad_options_are_refused_when_the_toolset_is_made() -> None:
    with pytest.raises(AgentDefinitionError, match="prefix"):
        MCPToolset.stdio("t", "x", prefix="a b")
    with pytest.raises(AgentDefinitionError, match="'severe'"):
        MCPToolset.stdio("t", "x", tool_risk={"y": "severe"})  # type: ignore[dict-item]
    with pytest.raises(AgentDefinitionError, match="http"):
        MCPToolset.http("t", "127.0.0.1:8000/mcp")
    assert "secret" not in repr(MCPToolset.http("t", "http://h/mcp", {"Authorization": "secret"}))


async def test_calls_return_structured_content_else_the_text(make_toolset: MakeToolset) -> None:
    toolset = make_toolset()
    assert await toolset.call_tool("add", {"a": 1, "b": 2}, context()) == {"result": 3}
    assert await toolset.call_tool("shout", {"text": "hi"}, context("shout")) == "HI\n!"


async def test_an_error_result_raises_tool_failed_with_the_servers_text(
    make_toolset: MakeToolset,
) -> None:
    toolset = make_toolset()
    with pytest.raises(ToolFailed, match="the disk is full") as caught:
        await toolset.call_tool("fail", {"reason": "the disk is full"}, context("fail"))
    assert caught.value.ids == {"tool": "fail", "toolset": "test"}


async def test_the_idempotency_key_and_run_reach_the_server_in_the_request_meta(
    make_toolset: MakeToolset,
) -> None:
    toolset = make_toolset()
    meta = await toolset.call_tool("echo_meta", {}, context("echo_meta", seq=7))
    assert meta["corral/idempotency_key"] == "run-1:7"
    assert meta["corral/run_id"] == "run-1"
    assert meta["corral/redelivered"] is False


async def test_concurrent_calls_share_one_connection(make_toolset: MakeToolset) -> None:
    toolset = make_toolset()
    key = uuid.uuid4().hex
    # Each call returns only once all five are in flight on the server at the same time.
    calls = [
        toolset.call_tool("gather", {"n": 5, "key": key}, context("gather", seq=seq))
        for seq in range(5)
    ]
    assert await asyncio.gather(*calls) == [{"result": 5}] * 5
    assert len(owner_tasks()) == 1


async def test_headers_are_sent_over_http(http_url: str) -> None:
    async with MCPToolset.http("test", http_url, headers={"X-Corral-Test": "yes"}) as toolset:
        assert await toolset.call_tool("echo_header", {"name": "X-Corral-Test"}, context()) == {
            "result": "yes"
        }


async def test_a_missing_command_is_a_usage_error_naming_server_and_command() -> None:
    async with MCPToolset.stdio("github", "/nonexistent/mcp-server", ["--flag"]) as toolset:
        with pytest.raises(UsageError, match="github") as caught:
            await toolset.list_tools()
    assert "/nonexistent/mcp-server --flag" in caught.value.message
    assert "No such file or directory" in caught.value.message
    assert not owner_tasks()


async def test_a_server_that_exits_at_once_is_a_tool_failure() -> None:
    async with MCPToolset.stdio("quitter", sys.executable, ["-c", "pass"]) as toolset:
        with pytest.raises(ToolFailed, match=r"'quitter'.*before the MCP handshake finished"):
            await toolset.list_tools()


async def test_an_unreachable_http_server_is_a_tool_failure_naming_the_url() -> None:
    with socket.socket() as probe:  # a port nothing listens on once the probe is closed
        probe.bind(("127.0.0.1", 0))
        port = probe.getsockname()[1]
    url = f"http://127.0.0.1:{port}/mcp"
    async with MCPToolset.http("search", url) as toolset:
        with pytest.raises(ToolFailed, match="unreachable") as caught:
            await toolset.call_tool("add", {"a": 1, "b": 2}, context())
    assert "'search'" in caught.value.message
    assert url in caught.value.message


async def test_aclose_stops_the_server_process_and_leaves_no_task() -> None:
    toolset = MCPToolset.stdio("test", sys.executable, [SERVER])
    pid = (await toolset.call_tool("pid", {}, context("pid")))["result"]
    assert owner_tasks()
    await toolset.aclose()
    assert not owner_tasks()
    with pytest.raises(ProcessLookupError):  # exited and reaped, not a zombie
        os.kill(pid, 0)
    await toolset.aclose()  # a second close is harmless

    # The toolset is usable again: a new connection, a new server process.
    again = (await toolset.call_tool("pid", {}, context("pid")))["result"]
    assert again != pid
    await toolset.aclose()
    assert not owner_tasks()


async def test_aclose_fails_the_calls_in_flight() -> None:
    toolset = MCPToolset.stdio("test", sys.executable, [SERVER])
    await toolset.list_tools()
    waiting = asyncio.create_task(
        toolset.call_tool("gather", {"n": 2, "key": uuid.uuid4().hex}, context("gather"))
    )
    # One turn of the loop: the call runs up to waiting for its answer (submitting is synchronous).
    await asyncio.sleep(0)
    await toolset.aclose()
    with pytest.raises(ToolFailed, match="closed while the call was in flight"):
        await waiting
    assert not owner_tasks()


async def test_a_server_that_dies_fails_the_next_call_and_the_one_after_reconnects() -> None:
    async with MCPToolset.stdio("test", sys.executable, [SERVER]) as toolset:
        pid = (await toolset.call_tool("pid", {}, context("pid")))["result"]
        os.kill(pid, signal.SIGKILL)
        with pytest.raises(ToolFailed, match="closed the connection"):
            await toolset.call_tool("add", {"a": 1, "b": 2}, context())
        assert await toolset.call_tool("add", {"a": 1, "b": 2}, context()) == {"result": 3}
    assert not owner_tasks()


def test_a_toolset_outlives_an_event_loop_that_ended() -> None:
    """A loop that ends cancels the connection's owner task, which stops the server."""
    toolset = MCPToolset.stdio("test", sys.executable, [SERVER])

    async def first() -> int:
        pid: int = (await toolset.call_tool("pid", {}, context("pid")))["result"]
        return pid  # no aclose: asyncio.run cancels the owner task

    async def second() -> int:
        async with toolset:
            pid: int = (await toolset.call_tool("pid", {}, context("pid")))["result"]
            return pid

    pid = asyncio.run(first())
    assert asyncio.run(second()) != pid
    with pytest.raises(ProcessLookupError):
        os.kill(pid, 0)


async def test_timeouts_are_enforced_per_request() -> None:
    started = time.monotonic()
    async with MCPToolset.stdio("test", sys.executable, [SERVER], timeout=0.5) as toolset:
        await toolset.list_tools()
        with pytest.raises(ToolFailed, match=r"did not answer within 0\.5 s"):
            await toolset.call_tool("gather", {"n": 2, "key": uuid.uuid4().hex}, context())
    assert time.monotonic() - started < DEADLINE
