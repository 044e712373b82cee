"""Tools: named, schema-checked programs an app (or the LLM on its behalf) can call.

`base` holds the Tool kind of program; one module per built-in tool (ocr, transcribe, speak, embed,
calculator, clock, knowledge), each backed by a model or program that is on this machine, never by
the network; `builtin` registers them through the plugin door (llmasos/programs/plugins.py).
"""

from llmasos.tools.base import Tool, ToolContext, ToolResult
from llmasos.tools.registry import ToolRegistry, default_registry, get_tool, list_tools, openai_tools

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
