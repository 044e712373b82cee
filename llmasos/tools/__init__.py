"""Tools: named, schema-checked capabilities an app (or the LLM on its behalf) can call.

`registry` holds the Tool protocol, the registry and the OpenAI function-calling rendering; one
module per built-in tool (ocr, transcribe, speak, embed, calculator, clock, knowledge), each backed
by a model or program that is on this machine, never by the network.
"""

from llmasos.tools.registry import (
    Tool,
    ToolContext,
    ToolRegistry,
    ToolResult,
    default_registry,
    get_tool,
    list_tools,
    openai_tools,
)

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
