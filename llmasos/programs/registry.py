"""The program registry: every service and tool by name, checked the same way on every call.

`run()` is the one door for running a program: the kernel's `invoke` system call checks the app's
capability (`KIND:NAME`) and writes the audit row; inside it the params are validated (defaults
filled in), then the input, then the program runs and its output is checked against its own output
schema (an output outside it is the program's bug, a 500, never the caller's).
"""

from __future__ import annotations

import dataclasses
import threading
from collections.abc import Iterable, Sequence
from pathlib import Path
from typing import Any

from llmasos.errors import (
    InvalidRequestError,
    LLMasOSError,
    PluginError,
    ServiceNotFoundError,
    ToolNotFoundError,
    did_you_mean,
)
from llmasos.programs.base import Cancellation, Invocation, Program, ProgramResult
from llmasos.programs.schemas import compile_schema, defaults_of, field_path, first_error
from llmasos.security.apps import App

KINDS = ("service", "tool", "function")  # function: a workflow step's Python code (workflows/functions.py)


class ProgramRegistry:
    """Programs by name (one namespace for services and tools), with their compiled schemas."""

    def __init__(self, programs: Iterable[Program] = ()) -> None:
        self._programs: dict[str, Program] = {}
        self._validators: dict[str, tuple[Any, Any, Any]] = {}  # input, params, output
        self._examples: dict[str, tuple[str, ...]] = {}
        self._origin: dict[str, str] = {}  # name -> the plugin that registered it
        self._lock = threading.Lock()
        self.plugins: list = []  # PluginInfo of each plugin loaded into this registry, in order
        self.registering: str = ""  # the plugin whose hook runs now (set by the loader)
        for program in programs:
            self.register(program)

    # ---- registration -------------------------------------------------------------------------

    def register(self, program: Program, *, examples: Sequence[str] | None = None) -> Program:
        """Add a program; its name must be new and its schemas valid JSON Schema. `examples` (routing
        requests in users' words) override the program's own."""
        if not isinstance(program, Program):
            raise PluginError(
                f"{program!r} is not a Program; subclass llmasos.services.Service or llmasos.tools.Tool"
            )
        name = getattr(program, "name", "")
        if not isinstance(name, str) or not name or not name.replace("_", "").replace("-", "").isalnum():
            raise PluginError(f"program name {name!r} must be letters, digits, '-' or '_'")
        if program.kind not in KINDS:
            raise PluginError(f"program {name!r} has kind {program.kind!r}; use one of {', '.join(KINDS)}")
        validators = _compile(program)
        with self._lock:
            if name in self._programs:
                owner = self._origin.get(name) or "an earlier registration"
                raise InvalidRequestError(
                    f"a program named {name!r} is already registered (by {owner}); pick another name"
                )
            self._programs[name] = program
            self._validators[name] = validators
            self._origin[name] = self.registering
            if examples is not None:
                self._examples[name] = tuple(examples)
        return program

    def remove(self, name: str) -> None:
        """Forget a program (a plugin that failed half-way is rolled back with this)."""
        with self._lock:
            for table in (self._programs, self._validators, self._examples, self._origin):
                table.pop(name, None)

    # ---- lookup -------------------------------------------------------------------------------

    def get(self, name: str, kind: str | None = None) -> Program:
        """The program `name` (of `kind`, if given); a 404 error that lists the known ones otherwise."""
        program = self._programs.get(name)
        if program is None or (kind is not None and program.kind != kind):
            names = [p.name for p in self.list(kind)]
            known, hint = ", ".join(names) or "none", did_you_mean(name, names)
            if kind == "tool":
                raise ToolNotFoundError(f"no tool named {name!r}; {hint}known tools: {known}")
            if kind == "service":
                raise ServiceNotFoundError(f"no service named {name!r}; {hint}the services are: {known}")
            raise ServiceNotFoundError(
                f"no service or tool named {name!r}; {hint}the services and tools are: {known}"
            )
        return program

    def list(self, kind: str | None = None) -> list[Program]:
        return [p for _, p in sorted(self._programs.items()) if kind is None or p.kind == kind]

    def examples_of(self, program: Program) -> tuple[str, ...]:
        return self._examples.get(program.name, tuple(program.examples))

    def origin_of(self, name: str) -> str:
        """The plugin that registered `name` ("" when registered directly)."""
        return self._origin.get(name, "")

    def names_from(self, plugin: str) -> list[str]:
        return sorted(n for n, origin in self._origin.items() if origin == plugin)

    # ---- running ------------------------------------------------------------------------------

    def run(
        self,
        syscalls: Any,
        app: App,
        name: str,
        input: Any = None,
        params: dict | None = None,
        *,
        model: str = "default",
        kind: str | None = None,
        file_roots: tuple[Path, ...] | None = None,
        cancellation: Cancellation | None = None,
        idempotency_key: str = "",
    ) -> ProgramResult:
        """Run program `name` for `app` through the `invoke` system call (capability, audit)."""
        program = self.get(name, kind)
        invocation = Invocation(
            app,
            syscalls=syscalls,
            model=model,
            file_roots=file_roots,
            cancellation=cancellation or Cancellation(),
            idempotency_key=idempotency_key,
        )
        return syscalls.invoke(
            app, program.kind, program.name, lambda: self.execute(program, input, params, invocation)
        )

    def execute(
        self, program: Program, input: Any, params: dict | None, invocation: Invocation
    ) -> ProgramResult:
        """Validate, run and check one call of `program`. The capability is the caller's to check:
        `run` does it in the system call."""
        checked = self.check_params(program, params)
        self.check_input(program, input)
        invocation.cancellation.check()
        result = program.execute(input, _with_params(invocation, checked))
        error = first_error(self._validators_of(program)[2], result.output)
        if error is not None:  # a bug in the program, not the caller's fault
            raise LLMasOSError(
                f"{program.kind} {program.name!r} returned a result outside its schema: {error.message}"
            )
        return result

    def check_params(self, program: Program, params: Any) -> dict:
        """`params` validated against the program's params schema, with defaults filled in."""
        params = {} if params is None else params
        schema = program.params_schema
        properties = schema.get("properties") or {}
        valid = f"valid params of {program.name}: {', '.join(properties) or 'none'}"
        if not isinstance(params, dict):
            raise InvalidRequestError(f"params must be an object, got {type(params).__name__}; {valid}")
        if schema.get("additionalProperties") is False:
            for key in params:
                if key not in properties:
                    raise InvalidRequestError(f"unknown param {key!r}; {valid}")
        error = first_error(self._validators_of(program)[1], params)
        if error is not None:
            raise InvalidRequestError(f"bad param: {field_path(error, 'params')}: {error.message}; {valid}")
        return {**defaults_of(schema), **params}

    def check_input(self, program: Program, input: Any) -> None:
        """The program's own checks (friendlier messages for what they cover), then its input schema."""
        program.check_input(input)
        error = first_error(self._validators_of(program)[0], input)
        if error is not None:
            raise program.bad_input(input, error)

    def _validators_of(self, program: Program) -> tuple[Any, Any, Any]:
        if self._programs.get(program.name) is program:
            return self._validators[program.name]
        return _compile(program)  # a program run without being registered (tests, scripts)

    # ---- views of the tools and services (and the names the old registries had) --------------

    def call(self, name: str, args: Any, context: Any) -> ProgramResult:
        """Run tool `name` in this process for `context.app`, without the kernel: for scripts and tests
        that hold no kernel. Nothing is audited or capability-checked here; interfaces use `run`."""
        tool = self.get(name, "tool")
        invocation = Invocation(
            context.app,
            home=context.home,
            file_roots=context.file_roots,
            idempotency_key=getattr(context, "idempotency_key", ""),
            syscalls=getattr(context, "syscalls", None),  # a tool that makes system calls of its own
        )
        return self.execute(tool, args, None, invocation)

    def get_tool(self, name: str) -> Program:
        return self.get(name, "tool")

    def list_tools(self) -> list[Program]:
        return self.list("tool")

    def get_service(self, name: str) -> Program:
        return self.get(name, "service")

    def list_services(self) -> list[Program]:
        return self.list("service")

    def openai_tools(self, app: App | None = None) -> list[dict]:
        """The tools (those `app` may use, if given) as OpenAI `tools=[...]` entries."""
        return openai_tools(t for t in self.list_tools() if app is None or app.allows("tool", t.name))


def openai_tools(tools: Iterable[Program]) -> list[dict]:
    """OpenAI function-calling entries: `{"type": "function", "function": {name, description, parameters}}`;
    a tool's parameters are its input schema."""
    return [
        {
            "type": "function",
            "function": {"name": t.name, "description": t.description, "parameters": t.input_schema},
        }
        for t in tools
    ]


def _compile(program: Program) -> tuple[Any, Any, Any]:
    """Validators of the input, params and output schemas; InvalidRequestError if one is invalid."""
    return tuple(
        compile_schema(schema, f"{program.kind} {program.name!r}: its {what}")
        for what, schema in (
            ("input_schema", program.input_schema),
            ("params_schema", program.params_schema),
            ("output_schema", program.output_schema),
        )
    )


def _with_params(invocation: Invocation, params: dict) -> Invocation:
    return dataclasses.replace(invocation, params=params)
