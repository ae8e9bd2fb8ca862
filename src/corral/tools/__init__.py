"""Tools: typed Python functions, and toolsets such as MCP servers. See docs/agents.md."""

from corral.tools.context import ToolContext
from corral.tools.tool import Risk, Tool, ToolDefinition, parse_arguments, tool
from corral.tools.toolset import Toolset

__all__ = [
    "Risk",
    "Tool",
    "ToolContext",
    "ToolDefinition",
    "Toolset",
    "parse_arguments",
    "tool",
]
