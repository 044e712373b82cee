"""The tool registry: named tools with JSON schemas, a capability each, and one door to call them.

A tool declares what its arguments and its result look like (JSON Schema), the capability an app
needs to use it (`tool:NAME`), and whether it reads or writes files or the network. `call()` is the
only way in: it checks the app's capability, validates the arguments (with `jsonschema`, naming the
bad field), runs the tool and checks the result against the tool's own result schema.
"""

from __future__ import annotations

import json
import threading
from abc import ABC, abstractmethod
from collections.abc import Iterable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, ClassVar

import jsonschema

from llmasos.config import llmasos_home
from llmasos.errors import InvalidRequestError, LLMasOSError, PermissionDeniedError, ToolNotFoundError
from llmasos.security.apps import App


@dataclass(frozen=True)
class ToolContext:
    """Who calls a tool and where its state lives.

    `file_roots` bounds the paths a tool may read or write for this caller: None (the default, for
    in-process callers on their own machine) allows any path; an interface serving remote clients
    passes the folders they may use, so `ocr` cannot be pointed at files of the server's user.
    """

    app: App
    home: Path = field(default_factory=llmasos_home)
    file_roots: tuple[Path, ...] | None = None

    @property
    def output_dir(self) -> Path:
        """Where a tool writes files it makes for this app when the caller names no path."""
        return self.home / "files" / (self.app.id or self.app.name)  # the id: a namesake gets a new folder

    def check_path(self, path: str | Path, *, purpose: str) -> Path:
        """`path` resolved, if this caller may use it for `purpose` ("read"/"write")."""
        resolved = Path(path).expanduser().resolve()
        roots = self.file_roots
        if roots is not None and not any(resolved.is_relative_to(Path(r).resolve()) for r in roots):
            allowed = ", ".join(str(r) for r in roots) or "none"
            raise PermissionDeniedError(
                f"app {self.app.name!r} may not {purpose} {str(path)!r}: outside its folders ({allowed}); "
                "send the content inline (base64) or use a file inside them"
            )
        return resolved


@dataclass(frozen=True)
class ToolResult:
    """A tool's answer: JSON-ready output that meets the tool's result schema."""

    tool: str
    output: dict[str, Any]

    def to_json(self) -> str:
        """The output as the content of an OpenAI `tool` message."""
        return json.dumps(self.output, ensure_ascii=False)


class Tool(ABC):
    """One tool. Subclasses set the class attributes and `run`; the registry does the checking."""

    name: ClassVar[str]
    description: ClassVar[str]
    parameters: ClassVar[dict]  # JSON Schema of the arguments (an object schema)
    result_schema: ClassVar[dict]  # JSON Schema of ToolResult.output
    touches_files: ClassVar[bool] = False
    touches_network: ClassVar[bool] = False  # none of the built-in tools may reach the network

    @property
    def capability(self) -> str:
        return f"tool:{self.name}"

    @abstractmethod
    def run(self, args: dict, context: ToolContext) -> ToolResult:
        """The result for arguments already validated against `parameters`."""

    def describe(self) -> dict:
        return {
            "name": self.name,
            "description": self.description,
            "parameters": self.parameters,
            "result_schema": self.result_schema,
            "capability": self.capability,
            "touches_files": self.touches_files,
            "touches_network": self.touches_network,
        }


class ToolRegistry:
    """Tools by name. `call()` checks capability, arguments and result around a tool's `run`."""

    def __init__(self, tools: Iterable[Tool] = ()) -> None:
        self._tools: dict[str, Tool] = {}
        self._validators: dict[str, tuple[jsonschema.Validator, jsonschema.Validator]] = {}
        for tool in tools:
            self.register(tool)

    def register(self, tool: Tool) -> Tool:
        """Add a tool; its schemas must be valid JSON Schema and its name new."""
        if tool.name in self._tools:
            raise InvalidRequestError(f"a tool named {tool.name!r} is already registered; pick another name")
        for what, schema in (("parameters", tool.parameters), ("result_schema", tool.result_schema)):
            try:
                jsonschema.Draft202012Validator.check_schema(schema)
            except jsonschema.SchemaError as err:
                raise InvalidRequestError(
                    f"tool {tool.name!r}: {what} is not valid JSON Schema: {err.message}"
                ) from None
        self._tools[tool.name] = tool
        self._validators[tool.name] = (
            jsonschema.Draft202012Validator(tool.parameters),
            jsonschema.Draft202012Validator(tool.result_schema),
        )
        return tool

    def get_tool(self, name: str) -> Tool:
        tool = self._tools.get(name)
        if tool is None:
            raise ToolNotFoundError(
                f"no tool named {name!r}; known tools: {', '.join(sorted(self._tools)) or 'none'}"
            )
        return tool

    def list_tools(self) -> list[Tool]:
        return [self._tools[name] for name in sorted(self._tools)]

    def validate_args(self, name: str, args: Any) -> dict:
        """`args` checked against the tool's parameters, with schema defaults filled in."""
        tool = self.get_tool(name)
        if not isinstance(args, dict):
            raise InvalidRequestError(
                f"arguments of tool {name!r} must be a JSON object, got {type(args).__name__}"
            )
        error = jsonschema.exceptions.best_match(self._validators[name][0].iter_errors(args))
        if error is not None:
            raise InvalidRequestError(
                f"bad argument for tool {name!r}: {_field_of(error)}: {error.message}; "
                f"expected arguments: {_signature(tool.parameters)}"
            )
        defaults = {
            k: s["default"] for k, s in tool.parameters.get("properties", {}).items() if "default" in s
        }
        return {**defaults, **args}

    def call(self, name: str, args: Any, context: ToolContext) -> ToolResult:
        """Run tool `name` for `context.app`: capability, then arguments, then the tool, then its result."""
        tool = self.get_tool(name)
        if not context.app.allows("tool", name):
            raise PermissionDeniedError(
                f"app {context.app.name!r} may not use tool {name!r}; an admin can grant {tool.capability}"
            )
        result = tool.run(self.validate_args(name, args), context)
        error = jsonschema.exceptions.best_match(self._validators[name][1].iter_errors(result.output))
        if error is not None:  # a bug in the tool, not the caller's fault
            raise LLMasOSError(f"tool {name!r} returned a result outside its schema: {error.message}")
        return result

    def openai_tools(self, app: App | None = None) -> list[dict]:
        """The tools (those `app` may use, if given) as OpenAI `tools=[...]` entries."""
        tools = [t for t in self.list_tools() if app is None or app.allows("tool", t.name)]
        return openai_tools(tools)


def openai_tools(tools: Iterable[Tool]) -> list[dict]:
    """OpenAI function-calling entries: `{"type": "function", "function": {name, description, parameters}}`"""
    return [
        {
            "type": "function",
            "function": {"name": t.name, "description": t.description, "parameters": t.parameters},
        }
        for t in tools
    ]


def _field_of(error: jsonschema.ValidationError) -> str:
    """The argument a validation error is about, as `texts[2]` or `image.path`."""
    path = "".join(f"[{p}]" if isinstance(p, int) else f".{p}" for p in error.absolute_path).lstrip(".")
    if error.validator == "required":  # the path points at the parent; name the missing field
        missing = error.message.split("'")[1] if error.message.count("'") >= 2 else ""
        path = f"{path}.{missing}" if path else missing
    if error.validator == "additionalProperties" and "'" in error.message:
        extra = error.message.split("'")[1]
        path = f"{path}.{extra}" if path else extra
    return f"field {path!r}" if path else "the arguments"


def _signature(schema: dict) -> str:
    """A short `name: type` list of an object schema's properties, required ones marked."""
    required = set(schema.get("required", ()))
    parts = []
    for key, sub in schema.get("properties", {}).items():
        kind = sub.get("type") or ("one of " + "/".join(map(str, sub["enum"])) if "enum" in sub else "any")
        if isinstance(kind, list):
            kind = "|".join(kind)
        parts.append(f"{key}: {kind}{'' if key in required else ' (optional)'}")
    return "{" + ", ".join(parts) + "}"


_DEFAULT: ToolRegistry | None = None
_DEFAULT_LOCK = threading.Lock()


def default_registry() -> ToolRegistry:
    """The process-wide registry of the built-in tools (models load on first use, not here)."""
    global _DEFAULT
    with _DEFAULT_LOCK:
        if _DEFAULT is None:
            from llmasos.tools.builtin import builtin_tools

            _DEFAULT = ToolRegistry(builtin_tools())
        return _DEFAULT


def get_tool(name: str) -> Tool:
    """A built-in tool by name (ToolNotFoundError otherwise)."""
    return default_registry().get_tool(name)


def list_tools() -> list[Tool]:
    """The built-in tools, by name."""
    return default_registry().list_tools()
