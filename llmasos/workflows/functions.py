"""`function` steps: Python code that enters through the plugin door, as a tool of its own kind.

A function is a `Tool` (so the app needs `tool:NAME`, every call is audited, and its input and
output are checked against its schemas by the registry) that a `function` step may name; a plain
tool may not be named by one, so a spec says which it means. A plugin registers one with:

    @function("word_count", input_schema={...}, output_schema={...})
    def word_count(args: dict, context: ToolContext) -> dict: ...

    def register(registry): registry.register(word_count)
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any, ClassVar

from llmasos.tools.base import Tool, ToolContext, ToolResult

FunctionBody = Callable[[dict, ToolContext], dict]


class Function(Tool):
    """A tool made from a Python function: `body(args, context) -> output`. Its kind is `function`,
    so it is no tool a model is offered (`list_tools`), and an app needs `function:NAME` to run it."""

    kind: ClassVar[str] = "function"
    description: ClassVar[str] = "a workflow function"

    def __init__(
        self,
        name: str,
        body: FunctionBody,
        input_schema: dict,
        output_schema: dict,
        *,
        description: str = "",
        touches_files: bool = False,
    ) -> None:
        self.name = name  # instance attributes shadow the class's declarations, as the registry reads them
        doc = (body.__doc__ or "").strip()
        self.description = description or (doc.splitlines()[0] if doc else f"workflow function {name}")
        self.parameters = input_schema
        self.result_schema = output_schema
        self.touches_files = touches_files
        self.body = body

    def run(self, args: dict, context: ToolContext) -> ToolResult:
        return ToolResult(self.name, self.body(args, context))


def function(
    name: str,
    *,
    input_schema: dict,
    output_schema: dict,
    description: str = "",
    touches_files: bool = False,
) -> Callable[[FunctionBody], Function]:
    """Decorator: the function below becomes a `Function`, ready to `registry.register(...)`."""

    def wrap(body: FunctionBody) -> Function:
        return Function(
            name, body, input_schema, output_schema, description=description, touches_files=touches_files
        )

    return wrap


def object_schema(**properties: Any) -> dict:
    """`{"type": "object", "properties": ..., "required": [all of them]}`, for short declarations."""
    return {"type": "object", "properties": properties, "required": list(properties)}
