"""The tools' view of the program registry, under the names the tool modules and their callers use.

Tools are programs (llmasos/programs): one registry holds them with the services, and the kernel's
`invoke` system call checks the capability. This module only gives the tool-shaped names.
"""

from __future__ import annotations

from llmasos.programs import ProgramRegistry, default_registry, openai_tools
from llmasos.tools.base import Tool, ToolContext, ToolResult

#: A registry of programs; kept under its old name for callers that build one from tools.
ToolRegistry = ProgramRegistry


def get_tool(name: str) -> Tool:
    """A registered tool by name (ToolNotFoundError otherwise)."""
    return default_registry().get_tool(name)


def list_tools() -> list[Tool]:
    """The registered tools, by name."""
    return default_registry().list_tools()


__all__ = [
    "Tool",
    "ToolContext",
    "ToolRegistry",
    "ToolResult",
    "default_registry",
    "get_tool",
    "list_tools",
    "openai_tools",
]
