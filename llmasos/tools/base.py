"""What a tool is: a program that runs a function (a local model or plain code) on JSON arguments.

A tool declares its arguments (`parameters`, JSON Schema of an object) and its result
(`result_schema`), and whether it touches files or the network; the app needs `tool:NAME` to use it.
The program registry checks all of that around `run` (llmasos/programs/registry.py).
"""

from __future__ import annotations

import json
from abc import abstractmethod
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, ClassVar

import jsonschema

from llmasos.config import llmasos_home
from llmasos.errors import InvalidRequestError, PermissionDeniedError
from llmasos.programs.base import Invocation, Program, ProgramResult, SideEffect
from llmasos.programs.schemas import field_path, signature
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
    idempotency_key: str = ""  # see Invocation.idempotency_key: tools that write honour it
    # The kernel's system calls (Invocation.syscalls), for tools whose work is a system call of
    # their own (`kv`: privacy policy and audit row); None for in-process callers without a kernel.
    syscalls: Any = None

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


class Tool(Program):
    """One tool. Subclasses set the class attributes and `run`; the registry does the checking."""

    kind: ClassVar[str] = "tool"
    parameters: ClassVar[dict]  # JSON Schema of the arguments (an object schema)
    result_schema: ClassVar[dict]  # JSON Schema of ToolResult.output
    touches_files: ClassVar[bool] = False
    touches_network: ClassVar[bool] = False  # none of the built-in tools may reach the network

    @property
    def input_schema(self) -> dict:
        return self.parameters

    @property
    def output_schema(self) -> dict:
        return self.result_schema

    @property
    def side_effects(self) -> frozenset[SideEffect]:
        effects = set()
        if self.touches_files:
            effects.add(SideEffect.FILES)
        if self.touches_network:
            effects.add(SideEffect.NETWORK)
        return frozenset(effects)

    @abstractmethod
    def run(self, args: dict, context: ToolContext) -> ToolResult:
        """The result for arguments already validated against `parameters`."""

    def execute(self, input: Any, invocation: Invocation) -> ProgramResult:
        defaults = {
            k: s["default"] for k, s in self.parameters.get("properties", {}).items() if "default" in s
        }
        context = ToolContext(
            invocation.app,
            invocation.home,
            invocation.file_roots,
            invocation.idempotency_key,
            invocation.syscalls,
        )
        return ProgramResult(self.run({**defaults, **input}, context).output)

    def bad_input(self, input: Any, error: jsonschema.ValidationError) -> InvalidRequestError:
        if not isinstance(input, dict):
            return InvalidRequestError(
                f"arguments of tool {self.name!r} must be a JSON object, got {type(input).__name__}"
            )
        path = field_path(error)
        where = f"field {path!r}" if path else "the arguments"
        return InvalidRequestError(
            f"bad argument for tool {self.name!r}: {where}: {error.message}; "
            f"expected arguments: {signature(self.parameters)}"
        )

    def describe(self) -> dict:
        return {
            **super().describe(),
            "parameters": self.parameters,
            "result_schema": self.result_schema,
            "touches_files": self.touches_files,
            "touches_network": self.touches_network,
        }
