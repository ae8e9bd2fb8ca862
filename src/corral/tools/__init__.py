"""Tools: typed Python functions, and toolsets such as MCP servers. See docs/agents.md."""

from typing import TYPE_CHECKING, Any

from corral.tools.context import ToolContext
from corral.tools.tool import Risk, Tool, ToolDefinition, parse_arguments, tool
from corral.tools.toolset import Toolset

if TYPE_CHECKING:
    from corral.tools.mcp import MCPToolset

__all__ = [
    "MCPToolset",
    "Risk",
    "Tool",
    "ToolContext",
    "ToolDefinition",
    "Toolset",
    "parse_arguments",
    "tool",
]


def __getattr__(name: str) -> Any:
    # The MCP SDK takes about half a second to import; only programs that use MCP pay for it.
    if name == "MCPToolset":
        from corral.tools.mcp import MCPToolset

        return MCPToolset
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
