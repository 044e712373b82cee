"""The system calls that start generations: `generate` and `chat`, and admission (capability,
priority, queue bounds, prompt size, tokenizing off the kernel's thread, the token quota's
reservation, the audit's start row) up to the process in the kernel's table; then the process's
events. Mixed into `Syscalls`, as `AdminCalls` is.
"""

from __future__ import annotations

import contextlib
import dataclasses
import itertools
import json
import time
from collections.abc import Callable, Iterator
from concurrent.futures import ThreadPoolExecutor
from typing import TYPE_CHECKING, Any

from llmasos.engine.protocol import Engine
from llmasos.engine.sampling_params import SamplingParams
from llmasos.errors import (
    ContextWindowExceededError,
    InvalidRequestError,
    LLMasOSError,
    PermissionDeniedError,
    QuotaExceededError,
)
from llmasos.kernel.admission import (
    PendingAdmissions,
    PromptRequest,
    refuse_if_full,
    refuse_if_over_token_quota,
    refuse_if_prompt_cannot_fit,
    refuse_invalid_unicode,
)
from llmasos.kernel.backpressure import OutputLimits
from llmasos.kernel.kernel import Event, Work
from llmasos.kernel.process import PriorityClass, Process, ProcessState
from llmasos.security.apps import App

if TYPE_CHECKING:
    from llmasos.kernel.call_trail import CallTrail
    from llmasos.kernel.kernel import Kernel


#: Prompts up to this many characters are tokenized in the admitting thread: about a millisecond of
#: work, less than waiting for a tokenizer thread and back on a busy server.
INLINE_TOKENIZING_CHARS = 4096


class GenerationCalls:
    """Mixed into `Syscalls`, which provides `kernel`, `trail`, `pending`, `record`, `allowed_model`
    (residency_calls.py), the privacy hooks (`_private_prompt`, `_private_messages`, `private_text`,
    `_watch_output`, `_restored_events`, `_restoring`: privacy_calls.py), `_visible`
    (process_calls.py) and `cancel_if_removed` (admin_calls.py)."""

    kernel: Kernel
    trail: CallTrail
    pending: PendingAdmissions
    _tokenizing: ThreadPoolExecutor
    # Keys of the quota holds while a prompt is tokenized (_least_held): negative, so never a pid.
    _provisional_ids = itertools.count(-1, -1)

    def generate(
        self,
        app: App,
        model: str,
        prompt: str | list[int],
        params: SamplingParams | None = None,
        *,
        priority: str | None = None,
    ) -> Process:
        """Start a completion of `prompt` (text as is, or token ids)."""
        if isinstance(prompt, str):
            prompt = self._private_prompt(app, "generate", model, prompt)
            request = PromptRequest(lambda tok: tok.encode(prompt), (prompt,), lambda: prompt)
        else:
            ids = list(prompt)
            request = PromptRequest(lambda tok: ids, (), lambda: json.dumps(ids))
        return self._start(app, "generate", model, params, priority, request)

    def chat(
        self,
        app: App,
        model: str,
        messages: list[dict],
        params: SamplingParams | None = None,
        *,
        priority: str | None = None,
        tools: list[dict] | None = None,
    ) -> Process:
        """Start a chat completion: the model's chat template over `messages` (and `tools`, the
        OpenAI-style definitions of the functions it may call, in the template's tool format)."""
        messages = self._private_messages(app, "chat", model, messages)
        contents = tuple(m["content"] for m in messages if isinstance(m.get("content"), str))
        tools = self.offered_tools(app, tools)
        request = PromptRequest(
            lambda tok: tok.encode_chat(messages, tools=tools), contents, lambda: json.dumps(messages)
        )
        return self._start(app, "chat", model, params, priority, request)

    def offered_tools(self, app: App, tools: list[dict] | None) -> list[dict] | None:
        """The OpenAI-style `tools` that `app` may have a model call (capability `tool:NAME`): the
        only ones a model of this app is ever shown. What the conversation says (a document, a tool's
        result, an OCR'd image) cannot add to them: they come from the request and the app alone."""
        if tools is None:
            return None
        usable = [t for t in tools if app.allows("tool", str(t.get("function", t).get("name", "")))]
        return usable or None  # none at all renders as a plain chat, not an empty tool list

    def usable_tools(self, app: App, names: list[str]) -> list[str]:
        """Those of `names` that `app` may have a model call, in order (see `offered_tools`)."""
        return [name for name in names if app.allows("tool", name)]

    def events(self, app: App, pid: int, timeout: float | None = None) -> Iterator[Event]:
        """The process's events (text deltas, then a final one)."""
        self._visible(app, pid)
        return self._restored_events(pid, self.kernel.events(pid, timeout))

    def subscribe(self, app: App, pid: int, callback: Callable[[Event], None]) -> None:
        """Deliver the process's events to `callback` instead of `events()` (see Kernel.subscribe)."""
        self._visible(app, pid)
        self.kernel.subscribe(pid, self._restoring(pid, callback))

    def taken(self, app: App, pid: int, tokens: int) -> None:
        """A subscriber's reader took `tokens` of the process's output tokens (the HTTP server: its
        transport accepted what it made of them). A process whose untaken output reaches the kernel's
        bound waits for this (kernel/backpressure.py); `events()` counts by itself."""
        self._visible(app, pid)
        self.kernel.taken(pid, tokens)

    def output_limits(self) -> OutputLimits | None:
        """How far a process's reader may fall behind (None: unbounded), for interfaces that buffer
        output of their own (a tool stream) to hold to the same bound and timeout."""
        return self.kernel.config.output

    def _start(
        self,
        app: App,
        call: str,
        model: str,
        params: SamplingParams | None,
        priority: str | None,
        request: PromptRequest,
    ) -> Process:
        started = time.monotonic()
        try:
            return self._admit(app, call, model, params, priority, request, started)
        except LLMasOSError as err:
            self.record(app.name, call, model, err, duration_s=time.monotonic() - started)
            raise

    def _admit(
        self,
        app: App,
        call: str,
        model: str,
        params: SamplingParams | None,
        priority: str | None,
        request: PromptRequest,
        started: float,
    ) -> Process:
        params = params or SamplingParams()
        for text in request.texts:
            refuse_invalid_unicode(text, "the prompt")
        name = self.allowed_model(app, model)
        process_class = self._priority(app, priority)
        kernel = self.kernel
        with kernel.lock:
            self._refuse_if_queues_full(app, name)
            self.pending.add(app.name)  # counted by the checks above until it is in the table
        try:
            # Outside the kernel's lock: loading a model takes seconds and must not stall other streams.
            engine = kernel.residency.acquire(name)
            try:
                return self._admit_on(engine, app, call, name, params, process_class, request, started)
            finally:
                kernel.residency.release(name)
        finally:
            with kernel.lock:
                self.pending.remove(app.name)

    def _refuse_if_queues_full(self, app: App, model: str) -> None:
        """QuotaExceededError when one more process of `app` would pass a queue or concurrency bound
        (processes still being admitted count as queued). Under the kernel's lock."""
        kernel = self.kernel
        live = [p for p in kernel.live.values() if p.app_id == app.identity]
        queued_total = sum(p.state is ProcessState.QUEUED for p in kernel.live.values())
        ahead = sum(kernel.remaining_tokens(p) for p in kernel.live.values())
        refuse_if_full(
            app.name,
            sum(p.state is ProcessState.QUEUED for p in live) + self.pending.of(app.name),
            queued_total + self.pending.total,
            kernel.config.queue,
            app.max_queued,
            ahead,
            kernel.rate(model),
        )
        holding = len(live) + self.pending.of(app.name)
        if app.max_concurrent and holding >= app.max_concurrent + (app.max_queued or 0):
            raise QuotaExceededError(f"app {app.name!r} has {holding} live processes, its limit", 1.0)

    def _admit_on(
        self,
        engine: Engine,
        app: App,
        call: str,
        name: str,
        params: SamplingParams,
        process_class: PriorityClass,
        request: PromptRequest,
        started: float,
    ) -> Process:
        kernel = self.kernel
        refuse_if_prompt_cannot_fit(
            sum(len(t) for t in request.texts), engine.tokenizer, engine.context_length, name
        )
        # The least this request can reserve: one prompt token and its max_tokens, within the window.
        fewest = min(params.max_tokens + 1, engine.context_length)
        with self._least_held(app, fewest) as hold:
            prompt_ids, params = self._tokenized_prompt(request, engine, name, params)
            work = Work(
                prompt_ids=prompt_ids,
                params=params,
                cache_namespace=app.cache_namespace,
                max_concurrent=app.max_concurrent,
                keep_text=app.audit_content and self.trail.audit is not None,
            )
            with kernel.lock:  # the quota check and the reservation are one step
                now = kernel.clock()
                kernel.limiter.settle(hold)  # the real reservation replaces the least held
                wanted = len(prompt_ids) + params.max_tokens
                refuse_if_over_token_quota(kernel.limiter, app.name, app.tokens_per_minute, wanted, now)
                process = Process(
                    pid=kernel.new_pid(),
                    app=app.name,
                    model=name,
                    priority=process_class,
                    created_at=now,
                    weight=app.weight,
                    tokens_in=len(prompt_ids),
                    app_id=app.identity,
                )
                kernel.limiter.reserve(app.name, process.pid, wanted, now)
                self._watch_output(app, process.pid)
                start_row = self.trail.begin(process, call, started, self._audit_content(app, request))
                kernel.admit(process, work)
        self.trail.wait_started(start_row)
        self.cancel_if_removed(app, process)
        return process

    @contextlib.contextmanager
    def _least_held(self, app: App, least: int) -> Iterator[int]:
        """Refuse an app already at its token quota before its prompt costs a tokenizer thread, and
        hold `least` tokens of its quota while the prompt is tokenized, so requests arriving together
        are charged for one another before tokenizing (all 20 of a quota attack passed the check
        when nothing was held, and were all tokenized). Yields the hold's key, for the real
        reservation to settle; settled here too when the request goes no further."""
        kernel = self.kernel
        hold = next(self._provisional_ids)
        with kernel.lock:
            now = kernel.clock()
            refuse_if_over_token_quota(kernel.limiter, app.name, app.tokens_per_minute, least, now)
            if app.tokens_per_minute:
                kernel.limiter.reserve(app.name, hold, least, now)
        try:
            yield hold
        finally:
            with kernel.lock:
                kernel.limiter.settle(hold)  # a no-op once the real reservation settled it

    def _tokenized_prompt(
        self, request: PromptRequest, engine: Engine, name: str, params: SamplingParams
    ) -> tuple[list[int], SamplingParams]:
        """The prompt's ids, checked against the model's window, and `params` with max_tokens clamped
        to what the window leaves."""
        prompt_ids = self._tokenize(request, engine.tokenizer)
        if not prompt_ids:
            raise InvalidRequestError("the prompt is empty; give at least one token of input")
        if len(prompt_ids) >= engine.context_length:
            over = len(prompt_ids) - engine.context_length + 1
            raise ContextWindowExceededError(
                f"the prompt has {len(prompt_ids)} tokens but {name}'s context window is "
                f"{engine.context_length}; shorten it by at least {over} tokens"
            )
        # A generation ends at the context window whatever it asked for; clamping here keeps the
        # token quota and the wait estimates honest for requests that ask for "as much as possible".
        if len(prompt_ids) + params.max_tokens > engine.context_length:
            params = dataclasses.replace(params, max_tokens=engine.context_length - len(prompt_ids))
        return prompt_ids, params

    def _audit_content(self, app: App, request: PromptRequest) -> str | None:
        """What the audit row keeps of the prompt: nothing unless the app opted in; then the text the
        model saw, with the audit direction's policy applied to it as well."""
        if not app.audit_content:
            return None
        return self.private_text(app, "audit", request.audit_text(), "the audit content")

    def _tokenize(self, request: PromptRequest, tokenizer: Any) -> list[int]:
        """The prompt's ids. A short prompt's in the calling thread (a request's own, off the event
        loop and the kernel's thread), which would only wait for the pool's thread; a long one's on
        the small tokenizing pool, at most `TOKENIZING_THREADS` prompts at once however many arrive."""
        if sum(len(text) for text in request.texts) <= INLINE_TOKENIZING_CHARS:
            return request.encode(tokenizer)
        return self._tokenizing.submit(request.encode, tokenizer).result()

    def _settle_tokens(self, process: Process, work: Work) -> None:
        """The kernel's on_finish observer: refund the tokens the process reserved and did not use."""
        self.kernel.limiter.settle(process.pid)

    @staticmethod
    def _priority(app: App, requested: str | None) -> PriorityClass:
        own = PriorityClass.parse(app.priority)
        if requested is None:
            return own
        wanted = PriorityClass.parse(requested)
        if wanted < own:
            raise PermissionDeniedError(
                f"app {app.name!r} runs at {own.label}; a request may ask for a lower class, "
                f"not {wanted.label}"
            )
        return wanted
