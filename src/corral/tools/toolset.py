"""Toolsets: tools that come from somewhere else (an MCP server), listed and called by name.

The tool loop lists a toolset's tools once per agent run, in a journaled step, so a replay sees
the same tools the first execution saw; each call is its own step.
"""

from __future__ import annotations

from typing import Any, Protocol, runtime_checkable

from corral.tools.context import ToolContext
from corral.tools.tool import ToolDefinition


@runtime_checkable
class Toolset(Protocol):
    """A named source of tools."""

    name: str

    async def list_tools(self) -> list[ToolDefinition]:
        """The tools available now, with their JSON schemas."""
        ...

    async def call_tool(self, name: str, arguments: dict[str, Any], context: ToolContext) -> Any:
        """Call tool `name` with arguments already checked against its schema."""
        ...
