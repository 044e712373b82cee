"""What every program is: a named, versioned, schema-typed thing an app may run through the kernel.

Services (prompt programs over the chat system call) and tools (functions backed by a local model
or plain code) are the two kinds of program. Both declare the same facts, so one registry, one
validator and one capability check serve them all, and a plugin adds either the same way:

- `name`, `description`, `version`;
- `input_schema`, `params_schema` (an object schema: the options beside the input) and
  `output_schema`, all JSON Schema, checked with `jsonschema` on every call;
- `kind` ("service" or "tool"): the capability an app needs is `KIND:NAME`;
- `side_effects`: what running it may change beyond its answer (none, the app's data, files, the
  network), for admins deciding what to grant;
- `examples`: requests in users' words that the router learns where to send requests from.
"""

from __future__ import annotations

import threading
from abc import ABC, abstractmethod
from collections.abc import Callable
from dataclasses import dataclass, field
from enum import StrEnum
from pathlib import Path
from typing import Any, ClassVar

import jsonschema

from llmasos.config import llmasos_home
from llmasos.errors import CallCancelledError, InvalidRequestError
from llmasos.programs.schemas import field_path
from llmasos.security.apps import App

#: The params schema of a program that takes no options.
NO_PARAMS: dict = {"type": "object", "properties": {}, "additionalProperties": False}


class SideEffect(StrEnum):
    """What a program may change besides returning its output."""

    APP_DATA = "app_data"  # the calling app's own stored data (e.g. its knowledge graph)
    FILES = "files"  # files on this machine (reads or writes paths)
    NETWORK = "network"  # other machines


class Cancellation:
    """A flag a program's caller raises to stop it, and what to do at once when it is raised.

    Services register a callback that cancels their live processes, so a departed HTTP client's
    generations stop on the kernel's next tick instead of running to their end."""

    def __init__(self) -> None:
        self._event = threading.Event()
        self._lock = threading.Lock()
        self._callbacks: list[Callable[[], None]] = []

    @property
    def is_set(self) -> bool:
        return self._event.is_set()

    def set(self) -> None:
        with self._lock:
            self._event.set()
            callbacks, self._callbacks = self._callbacks, []
        for callback in callbacks:
            callback()

    def on_cancel(self, callback: Callable[[], None]) -> None:
        """Call `callback` when cancelled (at once if already cancelled)."""
        with self._lock:
            if not self._event.is_set():
                self._callbacks.append(callback)
                return
        callback()

    def check(self) -> None:
        """Raise CallCancelledError if cancelled: for programs between steps."""
        if self._event.is_set():
            raise CallCancelledError("the call was cancelled (its client went away); nothing more runs")


@dataclass(frozen=True)
class Invocation:
    """One run of a program: who runs it, with what options, on which model, and where.

    `syscalls` is the kernel's system-call table (services make chat calls through it); `file_roots`
    bounds the paths a tool may read or write (None: any, for local callers; an interface serving
    remote clients passes the folders they may use, usually none)."""

    app: App
    params: dict = field(default_factory=dict)
    syscalls: Any = None
    model: str = "default"
    home: Path = field(default_factory=llmasos_home)
    file_roots: tuple[Path, ...] | None = None
    cancellation: Cancellation = field(default_factory=Cancellation)
    # Names one logical call however often it is retried (a workflow step's run, step, item and
    # attempt): programs that write honour it, so a call re-run after a crash writes once.
    idempotency_key: str = ""


@dataclass(frozen=True)
class ProgramResult:
    """What a program returns: its output, the tokens its model calls used, and how it worked."""

    output: Any
    usage: dict[str, int] = field(default_factory=dict)  # prompt_tokens, completion_tokens, ...
    details: dict[str, Any] = field(default_factory=dict)


class Program(ABC):
    """A program's declaration and its `execute`. Subclass `Service` or `Tool`, not this."""

    name: ClassVar[str]
    description: ClassVar[str]
    version: ClassVar[str] = "1.0"
    kind: ClassVar[str]  # "service" or "tool"
    examples: ClassVar[tuple[str, ...]] = ()

    @property
    @abstractmethod
    def input_schema(self) -> dict: ...

    @property
    def params_schema(self) -> dict:
        return NO_PARAMS

    @property
    @abstractmethod
    def output_schema(self) -> dict: ...

    @property
    def side_effects(self) -> frozenset[SideEffect]:
        return frozenset()

    @property
    def capability(self) -> str:
        return f"{self.kind}:{self.name}"

    @abstractmethod
    def execute(self, input: Any, invocation: Invocation) -> ProgramResult:
        """The result for an input and params already validated against the schemas."""

    def check_input(self, input: Any) -> None:
        """Checks of the input before its schema's, for friendlier messages; raise to refuse."""
        return None

    def bad_input(self, input: Any, error: jsonschema.ValidationError) -> InvalidRequestError:
        """The error for an input outside the input schema, saying where and what is wrong."""
        return InvalidRequestError(
            f"bad input for {self.kind} {self.name}: {field_path(error, 'input')}: {error.message}"
        )

    def describe(self) -> dict:
        return {
            "name": self.name,
            "kind": self.kind,
            "description": self.description,
            "version": self.version,
            "capability": self.capability,
            "side_effects": sorted(self.side_effects),
            "input_schema": self.input_schema,
            "params_schema": self.params_schema,
            "output_schema": self.output_schema,
            "examples": list(self.examples),
        }
