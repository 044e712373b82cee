"""System services: small, typed prompt programs over the kernel's `chat` system call.

A service has a name, a description, a version, and JSON schemas for its input, its params and its
output. `run(syscalls, app, input, params, model)` checks the app may use it, validates the params
(defaults filled in), and runs; every model call it makes is an ordinary `chat` system call of that
app, so the kernel checks, schedules and charges it like any other. The result carries the output,
the tokens used, and details (how summarize split its input, how extract bounded the schema, ...).
"""

from __future__ import annotations

import contextlib
import queue
from abc import ABC, abstractmethod
from dataclasses import dataclass, field
from functools import cached_property
from typing import Any, ClassVar

from llmasos.engine.json_schema import check_schema, validate
from llmasos.engine.sampling import LogitsProcessor, SamplingParams
from llmasos.errors import InvalidRequestError, LLMasOSError, PermissionDeniedError, ServiceNotFoundError
from llmasos.kernel.syscalls import Syscalls
from llmasos.security.apps import App

#: Seconds to wait for a process's next event before deciding the kernel is not running.
EVENT_TIMEOUT_SECONDS = 600.0
#: Service model calls started at once (they run batched); more wait for a wave to finish.
MAX_PARALLEL_CALLS = 8


@dataclass(frozen=True)
class ServiceResult:
    """What a service returns: its output, the tokens its model calls used, and how it worked."""

    output: str | dict | list | int | float | bool | None
    usage: dict[str, int]  # prompt_tokens, completion_tokens, total_tokens, calls
    details: dict[str, Any] = field(default_factory=dict)


@dataclass(frozen=True)
class Completion:
    """One model call's text and why it ended (stop or length)."""

    text: str
    finish_reason: str | None
    prompt_tokens: int
    completion_tokens: int


@dataclass(frozen=True)
class Call:
    """One chat call a service wants: messages and how to sample."""

    messages: list[dict]
    max_tokens: int
    temperature: float = 0.0
    repetition_penalty: float = 1.1  # greedy decoding of small models loops without it
    seed: int | None = None
    stop: tuple[str, ...] = ()
    logits_processors: tuple[LogitsProcessor, ...] = ()


class Session:
    """One service run's access to a model through the system calls, and the usage it adds up."""

    def __init__(self, syscalls: Syscalls, app: App, model: str) -> None:
        self.syscalls = syscalls
        self.app = app
        self.model = syscalls.allowed_model(app, model)
        self.usage = {"prompt_tokens": 0, "completion_tokens": 0, "total_tokens": 0, "calls": 0}

    @cached_property
    def _engine(self) -> Any:
        # Loads the model if it is not resident. Only a handle for the tokenizer and sizes: each
        # process pins the model itself while it is admitted, so the pin is released at once.
        residency = self.syscalls.kernel.residency
        engine = residency.acquire(self.model)
        residency.release(self.model)
        return engine

    @property
    def tokenizer(self) -> Any:
        return self._engine.tokenizer

    @property
    def context_length(self) -> int:
        """Tokens a prompt and its output may take together on this model."""
        return min(self._engine.context_length, self._engine.max_sequence_tokens)

    def prompt_tokens(self, messages: list[dict]) -> int:
        return len(self.tokenizer.encode_chat(messages))

    def chat(self, call: Call) -> Completion:
        return self.chat_many([call])[0]

    @property
    def kv_tokens(self) -> int:
        """Tokens the model's whole KV pool holds."""
        stats = self._engine.stats()
        return stats.num_blocks * stats.block_size

    def chat_many(self, calls: list[Call]) -> list[Completion]:
        """Run the calls as concurrent processes, in waves, and return their answers in order."""
        done: list[Completion] = []
        for wave in self._waves(calls):
            processes: list[Any] = []
            try:
                for call in wave:
                    processes.append(self._start(call))
                while processes:
                    done.append(self._collect(processes[0]))
                    processes.pop(0)
            finally:  # a call that failed leaves no orphans running on the app's account
                for process in processes:
                    with contextlib.suppress(LLMasOSError):  # it may have ended meanwhile
                        self.syscalls.cancel(self.app, process.pid)
        return done

    def _waves(self, calls: list[Call]) -> list[list[Call]]:
        """Consecutive groups of calls that fit the KV pool together (more would only preempt one
        another: long prompts recomputed again and again) and the app's concurrency quota."""
        limit = max(1, min(MAX_PARALLEL_CALLS, self.app.max_concurrent or MAX_PARALLEL_CALLS))
        capacity = self.kv_tokens
        waves: list[list[Call]] = []
        used = capacity + 1
        for call in calls:
            need = self.prompt_tokens(call.messages) + call.max_tokens
            if used + need > capacity or len(waves[-1]) >= limit:
                waves.append([])
                used = 0
            waves[-1].append(call)
            used += need
        return waves

    def _start(self, call: Call) -> Any:
        params = SamplingParams(
            max_tokens=call.max_tokens,
            temperature=call.temperature,
            repetition_penalty=call.repetition_penalty,
            seed=call.seed,
            stop=call.stop,
            logits_processors=call.logits_processors,
        )
        return self.syscalls.chat(self.app, self.model, call.messages, params)

    def _collect(self, process: Any) -> Completion:
        parts, final = [], None
        try:
            for event in self.syscalls.events(self.app, process.pid, timeout=EVENT_TIMEOUT_SECONDS):
                parts.append(event.text)
                final = event
        except queue.Empty:
            self.syscalls.cancel(self.app, process.pid)
            raise LLMasOSError(
                f"process {process.pid} made no progress for {EVENT_TIMEOUT_SECONDS:.0f} s; "
                "is the kernel running (kernel.start())?"
            ) from None
        self.usage["prompt_tokens"] += process.tokens_in
        self.usage["completion_tokens"] += process.tokens_out
        self.usage["total_tokens"] += process.tokens_in + process.tokens_out
        self.usage["calls"] += 1
        if final.error is not None:
            raise final.error
        if final.finish_reason not in ("stop", "length"):
            raise LLMasOSError(f"process {process.pid} ended without an answer ({final.finish_reason})")
        return Completion("".join(parts), final.finish_reason, process.tokens_in, process.tokens_out)


class Service(ABC):
    """A named, versioned prompt program. Subclasses set the class attributes and `_run`."""

    name: ClassVar[str]
    description: ClassVar[str]
    version: ClassVar[str] = "1.0"
    input_schema: ClassVar[dict]
    params_schema: ClassVar[dict]  # an object schema; its properties are the params
    output_schema: ClassVar[dict]

    def run(
        self, syscalls: Syscalls, app: App, input: Any, params: dict | None = None, model: str = "default"
    ) -> ServiceResult:
        if not app.allows("service", self.name):
            raise PermissionDeniedError(
                f"app {app.name!r} may not use service {self.name!r}; an admin can grant service:{self.name}"
            )
        checked = self.check_params(params)
        self.check_input(input)
        session = Session(syscalls, app, model)
        output, details = self._run(session, input, checked)
        return ServiceResult(output, dict(session.usage), details)

    @abstractmethod
    def _run(self, session: Session, input: Any, params: dict) -> tuple[Any, dict]:
        """(output, details) for a checked input and params."""

    def check_params(self, params: dict | None) -> dict:
        """`params` validated against params_schema, with defaults filled in."""
        params = {} if params is None else params
        properties = self.params_schema.get("properties", {})
        valid = f"valid params of {self.name}: {', '.join(properties) or 'none'}"
        if not isinstance(params, dict):
            raise InvalidRequestError(f"params must be an object, got {type(params).__name__}; {valid}")
        for key in params:
            if key not in properties:
                raise InvalidRequestError(f"unknown param {key!r}; {valid}")
        errors = validate(params, self.params_schema, "params")
        if errors:
            raise InvalidRequestError(f"bad param: {errors[0]}; {valid}")
        defaults = {k: s["default"] for k, s in properties.items() if "default" in s}
        return {**defaults, **params}

    def check_input(self, input: Any) -> None:
        errors = validate(input, self.input_schema, "input")
        if errors:
            raise InvalidRequestError(f"bad input for service {self.name}: {errors[0]}")

    def describe(self) -> dict:
        return {
            "name": self.name,
            "description": self.description,
            "version": self.version,
            "input_schema": self.input_schema,
            "params_schema": self.params_schema,
            "output_schema": self.output_schema,
        }


_REGISTRY: dict[str, Service] = {}


def register(service_class: type[Service]) -> type[Service]:
    """Class decorator: make a service available by its name."""
    check_schema(service_class.params_schema)
    _REGISTRY[service_class.name] = service_class()
    return service_class


def get_service(name: str) -> Service:
    service = _REGISTRY.get(name)
    if service is None:
        raise ServiceNotFoundError(
            f"no service named {name!r}; the services are: {', '.join(sorted(_REGISTRY))}"
        )
    return service


def list_services() -> list[Service]:
    return [_REGISTRY[name] for name in sorted(_REGISTRY)]


def text_schema(description: str, min_length: int = 1) -> dict:
    return {"type": "string", "minLength": min_length, "description": description}


def common_params(max_tokens: int | None, required: tuple[str, ...] = (), **extra: dict) -> dict:
    """A params schema: the service's own params plus max_tokens and temperature."""
    limit = {"type": "integer", "minimum": 1, "maximum": 1_000_000}
    limit["description"] = "most tokens the answer may take"
    if max_tokens is not None:
        limit["default"] = max_tokens
    return {
        "type": "object",
        "properties": {
            **extra,
            "max_tokens": limit,
            "temperature": {
                "type": "number",
                "minimum": 0,
                "maximum": 2,
                "default": 0.0,
                "description": "0 decodes greedily (deterministic)",
            },
            "seed": {"type": "integer", "description": "with temperature > 0: same seed, same output"},
        },
        "required": list(required),
        "additionalProperties": False,
    }
