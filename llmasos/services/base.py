"""System services: small, typed prompt programs over the kernel's `chat` system call.

A service is a program (llmasos/programs) of kind "service": a name, a description, a version, JSON
schemas for its input, its params and its output, and example requests for the router. The program
registry validates a call and runs `execute`, which gives the service a `Session`: every model call
it makes is an ordinary `chat` system call of the calling app, so the kernel checks, schedules and
charges it like any other. A session ends its live processes when its call is cancelled (the HTTP
client went away). The result carries the output, the tokens used, and details (how summarize split
its input, how extract bounded the schema, ...).
"""

from __future__ import annotations

import contextlib
import queue
import threading
from abc import abstractmethod
from collections.abc import Callable
from dataclasses import dataclass
from functools import cached_property
from typing import Any, ClassVar

from llmasos.engine.sampling_params import LogitsProcessor, SamplingParams
from llmasos.errors import CallCancelledError, LLMasOSError
from llmasos.kernel.sampling_request import sampling_params
from llmasos.kernel.syscalls import Syscalls
from llmasos.programs import Cancellation, Invocation, Program, ProgramResult, default_registry
from llmasos.security.apps import App

#: Seconds to wait for a process's next event before deciding the kernel is not running.
EVENT_TIMEOUT_SECONDS = 600.0
#: Service model calls started at once (they run batched); more wait for a wave to finish.
MAX_PARALLEL_CALLS = 8


#: What a service returns (usage: prompt_tokens, completion_tokens, total_tokens, calls).
ServiceResult = ProgramResult


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
    # A client's own sampling params (an API request's), used as they are instead of the fields above.
    params: SamplingParams | None = None
    tools: list[dict] | None = None  # OpenAI-style tools, rendered in the chat template's tool format


class Session:
    """One service run's access to a model through the system calls, and the usage it adds up."""

    def __init__(
        self,
        syscalls: Syscalls,
        app: App,
        model: str,
        cancellation: Cancellation | None = None,
        *,
        priority: str | None = None,  # a lower class than the app's, as a request may ask
    ) -> None:
        self.syscalls = syscalls
        self.app = app
        self.priority = priority
        self.model = syscalls.allowed_model(app, model)
        self.usage = {"prompt_tokens": 0, "completion_tokens": 0, "total_tokens": 0, "calls": 0}
        self.cancellation = cancellation or Cancellation()
        self._live: dict[int, Any] = {}  # pid -> process, of the calls running now
        self._live_lock = threading.Lock()
        self.cancellation.on_cancel(self._cancel_live)

    @cached_property
    def tokenizer(self) -> Any:
        # Loads the model if it is not resident; each process pins the model itself while admitted.
        return self.syscalls.tokenizer(self.app, self.model)

    @cached_property
    def _limits(self) -> Any:
        return self.syscalls.model_limits(self.app, self.model)

    @property
    def context_length(self) -> int:
        """Tokens a prompt and its output may take together on this model."""
        return self._limits.context_length

    def prompt_tokens(self, messages: list[dict]) -> int:
        return len(self.tokenizer.encode_chat(messages))

    def chat(self, call: Call) -> Completion:
        return self.chat_many([call])[0]

    def chat_streamed(self, call: Call, on_text: Callable[[str], None]) -> Completion:
        """One call whose text is handed to `on_text` piece by piece as it is generated."""
        self.cancellation.check()
        process = self._start(call)
        try:
            return self._collect(process, on_text)
        finally:
            self._cancel(process, "its service call failed")
            with self._live_lock:
                self._live.pop(process.pid, None)

    @property
    def kv_tokens(self) -> int:
        """Tokens the model's whole KV pool holds."""
        return self._limits.kv_tokens

    def chat_many(self, calls: list[Call]) -> list[Completion]:
        """Run the calls as concurrent processes, in waves, and return their answers in order."""
        done: list[Completion] = []
        for wave in self._waves(calls):
            self.cancellation.check()
            processes: list[Any] = []
            try:
                for call in wave:
                    processes.append(self._start(call))
                while processes:
                    done.append(self._collect(processes[0]))
                    processes.pop(0)
            finally:  # a call that failed leaves no orphans running on the app's account
                for process in processes:
                    self._cancel(process, "a sibling call of its service failed")
                with self._live_lock:
                    self._live.clear()
        return done

    def _cancel(self, process: Any, reason: str) -> None:
        if process.is_terminal:
            return
        with contextlib.suppress(LLMasOSError):  # it may have ended meanwhile
            self.syscalls.cancel(self.app, process.pid, reason=reason)

    def _cancel_live(self) -> None:
        """On cancellation (from the canceller's thread): end every call running now."""
        with self._live_lock:
            live = list(self._live.values())
        for process in live:
            self._cancel(process, "its call was cancelled: the client went away or the server is stopping")

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
        params = call.params or sampling_params(
            {
                "max_tokens": call.max_tokens,
                "temperature": call.temperature,
                "repetition_penalty": call.repetition_penalty,
                "seed": call.seed,
                "stop": call.stop,
                "logits_processors": call.logits_processors,
            }
        )
        process = self.syscalls.chat(
            self.app, self.model, call.messages, params, priority=self.priority, tools=call.tools
        )
        with self._live_lock:
            self._live[process.pid] = process
        if self.cancellation.is_set:  # cancelled while it was being admitted
            self._cancel_live()
        return process

    def _collect(self, process: Any, on_text: Callable[[str], None] | None = None) -> Completion:
        parts, final = [], None
        try:
            for event in self.syscalls.events(self.app, process.pid, timeout=EVENT_TIMEOUT_SECONDS):
                parts.append(event.text)
                final = event
                if on_text is not None and event.text:
                    on_text(event.text)
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
        if final.finish_reason == "cancelled":
            raise CallCancelledError(
                f"process {process.pid} of the service call was cancelled ({process.reason})"
            )
        if final.finish_reason not in ("stop", "length"):
            raise LLMasOSError(f"process {process.pid} ended without an answer ({final.finish_reason})")
        return Completion("".join(parts), final.finish_reason, process.tokens_in, process.tokens_out)


class Service(Program):
    """A named, versioned prompt program. Subclasses set the class attributes and `_run`."""

    kind: ClassVar[str] = "service"
    input_schema: ClassVar[dict]
    params_schema: ClassVar[dict]  # an object schema; its properties are the params
    output_schema: ClassVar[dict]

    def execute(self, input: Any, invocation: Invocation) -> ProgramResult:
        # The caller's model, else the one the operator configured for this service, else the default.
        model = invocation.syscalls.model_for(self.name, invocation.model)
        session = Session(invocation.syscalls, invocation.app, model, invocation.cancellation)
        output, details = self._run(session, input, invocation.params)
        return ProgramResult(output, dict(session.usage), details)

    def run(
        self, syscalls: Syscalls, app: App, input: Any, params: dict | None = None, model: str = "default"
    ) -> ProgramResult:
        """Validate and run this service for `app`. The capability check and the audit row are the
        `invoke` system call's: wrap this in it, or use `default_registry().run(...)` which does."""
        invocation = Invocation(app, syscalls=syscalls, model=model)
        return default_registry().execute(self, input, params, invocation)

    @abstractmethod
    def _run(self, session: Session, input: Any, params: dict) -> tuple[Any, dict]:
        """(output, details) for a checked input and params."""


def get_service(name: str) -> Service:
    """A registered service by name (ServiceNotFoundError, listing the services, otherwise)."""
    return default_registry().get_service(name)


def list_services() -> list[Service]:
    """The registered services, by name."""
    return default_registry().list_services()


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
