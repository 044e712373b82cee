"""System calls: the one narrow entry point through which every interface reaches the kernel.

Each call names the calling app, is checked against its capabilities and quotas, and is charged
to it. A denied call raises the error from `llmasos.errors` that says why and what to do. Every
call, allowed or not, becomes one row of the audit log (when the kernel has one): at once for a
call that is over when it returns, and when its process ends for `generate` and `chat`.
"""

from __future__ import annotations

import dataclasses
import json
import time
from collections.abc import Callable, Iterator
from concurrent.futures import ThreadPoolExecutor
from typing import Any, TypeVar

from llmasos.data.pseudonym_store import pseudonym_store
from llmasos.engine.protocol import Engine
from llmasos.engine.sampling_params import SamplingParams
from llmasos.errors import (
    ContextWindowExceededError,
    InvalidRequestError,
    LLMasOSError,
    PermissionDeniedError,
    QuotaExceededError,
)
from llmasos.kernel import snapshots
from llmasos.kernel.admin_calls import AdminCalls
from llmasos.kernel.admission import (
    TOKENIZING_THREADS,
    PendingAdmissions,
    PromptRequest,
    refuse_if_full,
    refuse_if_over_token_quota,
    refuse_if_prompt_cannot_fit,
    refuse_invalid_unicode,
)
from llmasos.kernel.call_trail import DENIALS, CallTrail
from llmasos.kernel.conversation_calls import ConversationCalls
from llmasos.kernel.data_calls import DataCalls
from llmasos.kernel.kernel import Event, Kernel, Work
from llmasos.kernel.latency import LatencyHistograms
from llmasos.kernel.latency_window import LatencyWindow
from llmasos.kernel.overview_calls import OverviewCalls
from llmasos.kernel.privacy_calls import PrivacyCalls
from llmasos.kernel.process import PriorityClass, Process, ProcessState
from llmasos.kernel.process_calls import ProcessCalls
from llmasos.kernel.residency_calls import ResidencyCalls
from llmasos.kernel.stats_calls import StatsCalls
from llmasos.model.tokenizer import Tokenizer
from llmasos.privacy.guard import PrivacyGuard
from llmasos.security.apps import App, AppRegistry
from llmasos.security.audit import AuditLog
from llmasos.settings import Settings

T = TypeVar("T")

#: Seconds a stopping kernel waits for its queued audit rows (a few milliseconds unless the disk stalls).
AUDIT_FLUSH_SECONDS = 10.0


class Syscalls(
    ProcessCalls,
    AdminCalls,
    ResidencyCalls,
    DataCalls,
    ConversationCalls,
    StatsCalls,
    PrivacyCalls,
    OverviewCalls,
):
    """generate / chat / cancel / status / ps for one kernel, (from `AdminCalls`) apps, models and
    the audit log, (from `ResidencyCalls`) loading and unloading models, (from `DataCalls`) each
    app's files, vector stores and key-value store, (from `ConversationCalls`) its conversations and
    stored responses, (from `StatsCalls`) usage statistics, (from `PrivacyCalls`) each app's
    personal-data policy on what goes to a model and what comes back, and (from `OverviewCalls`)
    the live overview the console and `top` read."""

    def __init__(
        self,
        kernel: Kernel,
        apps: AppRegistry,
        resolve_model: Any = None,
        audit: AuditLog | None = None,
        interface: str = "",
        settings: Settings | None = None,
    ) -> None:
        self.kernel = kernel
        self.settings = settings or Settings()  # the operator's: which model each service uses
        self.apps = apps
        # name or alias -> the library's canonical name; raises ModelNotFoundError
        self._resolve_model = resolve_model or (lambda name: name)
        self.trail = CallTrail(kernel, audit, interface)
        self.pending = PendingAdmissions()
        self._tokenizing = ThreadPoolExecutor(TOKENIZING_THREADS, thread_name_prefix="llmasos-tokenize")
        kernel.on_finish.append(self.trail.ended)
        kernel.on_finish.append(self._settle_tokens)
        self.latency = LatencyHistograms()  # read by /metrics; fed once per process as it ends
        kernel.on_finish.append(self.latency.observe)
        # apps' personal-data policies (privacy_calls.py); their placeholders kept in their databases
        self.privacy = PrivacyGuard(vault_store=pseudonym_store)
        self._restorers = {}  # pid -> what restores its placeholders in the text it sends back
        self.latency_window = LatencyWindow()  # the last hour's latencies, for live views (overview)
        kernel.on_finish.append(self.latency_window.observe)
        if audit is not None:  # a process's final event goes out once its end row is durable
            kernel.defer_final = audit.after_written
        # The cluster's nodes as dicts (`llmasos.cluster.registry.NodeView`), when the engines run on a
        # Ray cluster (`serve --cluster`); None on a single box.
        self.cluster_nodes: Callable[[], list[dict]] | None = None

    def nodes(self, app: App) -> list[dict]:
        """The cluster's nodes (capabilities, models and their health, liveness) with the live
        processes each runs now; empty on a single box."""
        with self.trail.audited(app, "nodes"):
            return self.node_snapshot()

    def node_snapshot(self) -> list[dict]:
        """`nodes` without the audit row: what /metrics reads at every scrape."""
        if self.cluster_nodes is None:
            return []
        with self.kernel.lock:
            live = [p.node for p in self.kernel.table.values() if p.node and not p.is_terminal]
        return [{**node, "processes": live.count(node["name"])} for node in self.cluster_nodes()]

    @property
    def audit(self) -> AuditLog | None:
        return self.trail.audit

    def record(
        self, app: str, call: str, target: str = "", error: LLMasOSError | None = None, **extra
    ) -> None:
        """Count one call and write its audit row (see CallTrail.record)."""
        self.trail.record(app, call, target, error, **extra)

    def audited(self, app: App, call: str, target: str = ""):
        """A context that records the enclosed call of an upper layer (a workflow run's approval or
        cancellation): one audit row, ok when it returns, denied or error when it raises."""
        return self.trail.audited(app, call, target)

    def count(self, app: str, call: str, error: LLMasOSError | None = None) -> None:
        """Count a call in the metrics without an audit row (failures that are audited in aggregate)."""
        outcome = "ok" if error is None else ("denied" if isinstance(error, DENIALS) else "error")
        self.kernel.counters.call(app, call, outcome, error.type if error is not None else None)

    def resolve_model(self, name: str) -> str:
        """The library's canonical name of a model name or alias; ModelNotFoundError if none."""
        return self._resolve_model(name)

    def invoke(self, app: App, kind: str, name: str, fn: Callable[[], T], *, call: str | None = None) -> T:
        """Run a service or tool call `fn` for `app`: capability `KIND:NAME` checked, call audited.

        The upper layers (services, tools) run the work; the kernel decides whether the app may and
        writes it down. Token usage is read from the result's `usage` mapping when it has one.
        """
        started = time.monotonic()
        call = call or f"{kind}.{name}"
        try:
            if not app.allows(kind, name):
                raise PermissionDeniedError(
                    f"app {app.name!r} may not use {kind} {name!r}; an admin can grant {kind}:{name}"
                )
            result = fn()
        except LLMasOSError as err:
            self.record(app.name, call, name, err, duration_s=time.monotonic() - started)
            raise
        usage = getattr(result, "usage", None) or {}
        self.record(
            app.name,
            call,
            name,
            duration_s=time.monotonic() - started,
            tokens_in=int(usage.get("prompt_tokens", 0)),
            tokens_out=int(usage.get("completion_tokens", 0)),
        )
        return result

    # ---- generation ---------------------------------------------------------------------------

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

    def allowed_model(self, app: App, model: str) -> str:
        """The canonical name of `model`, if `app` may use it; PermissionDeniedError otherwise."""
        name = self._resolve_model(model)
        if not app.allows("model", name):
            raise PermissionDeniedError(
                f"app {app.name!r} may not use model {name!r}; an admin can grant model:{name}"
            )
        return name

    def tokenizer(self, app: App, model: str) -> Tokenizer:
        """The tokenizer of `model` (loading the model if needed), e.g. to build a grammar for it."""
        name = self.allowed_model(app, model)
        engine = self.kernel.residency.acquire(name)
        self.kernel.residency.release(name)
        return engine.tokenizer

    def model_limits(self, app: App, model: str) -> snapshots.ModelLimits:
        """The context length and KV pool of `model` (loading it if needed), to size requests by."""
        name = self.allowed_model(app, model)
        engine = self.kernel.residency.acquire(name)
        self.kernel.residency.release(name)
        return snapshots.model_limits(engine)

    def preload(self, app: App, model: str, *, keep: bool = False) -> float:
        """Load `model` now, so that a first request does not wait for it; the seconds it took.
        With `keep`, it stays loaded (never expires or is evicted) until it is unloaded on request
        (`llmasos serve --preload`, `llmasos models unload`)."""
        with self.trail.audited(app, "preload", model):
            name = self.allowed_model(app, model)
            started = time.monotonic()
            self.kernel.residency.acquire(name)
            if keep:
                self.kernel.residency.hold(name)
            self.kernel.residency.release(name)
            return time.monotonic() - started

    def subscribe(self, app: App, pid: int, callback: Callable[[Event], None]) -> None:
        """Deliver the process's events to `callback` instead of `events()` (see Kernel.subscribe)."""
        self._visible(app, pid)
        self.kernel.subscribe(pid, self._restoring(pid, callback))

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
        live = [p for p in kernel.table.values() if p.app_id == app.identity and not p.is_terminal]
        queued_total = sum(p.state is ProcessState.QUEUED for p in kernel.table.values())
        ahead = sum(kernel.remaining_tokens(p) for p in kernel.table.values() if not p.is_terminal)
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
        work = Work(
            prompt_ids=prompt_ids,
            params=params,
            cache_namespace=app.cache_namespace,
            max_concurrent=app.max_concurrent,
            keep_text=app.audit_content and self.trail.audit is not None,
        )
        with kernel.lock:  # the quota check and the reservation are one step
            now = kernel.clock()
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

    def _audit_content(self, app: App, request: PromptRequest) -> str | None:
        """What the audit row keeps of the prompt: nothing unless the app opted in; then the text the
        model saw, with the audit direction's policy applied to it as well."""
        if not app.audit_content:
            return None
        return self.private_text(app, "audit", request.audit_text(), "the audit content")

    def _tokenize(self, request: PromptRequest, tokenizer: Any) -> list[int]:
        """The prompt's ids, computed on the small tokenizing pool: off the event loop and the
        kernel's thread, and at most `TOKENIZING_THREADS` prompts at once however many arrive."""
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

    # ---- the kernel's life and state, for the interfaces that show it ---------------------------
    # Unaudited: health checks and scrapes come every few seconds, and show no app's data beyond
    # counters; the routes decide who may see them (/metrics needs the admin key).

    @property
    def is_running(self) -> bool:
        return self.kernel.is_running

    def start(self) -> None:
        """Run the kernel's scheduling loop in its own thread (a server at start-up)."""
        self.kernel.start()

    def stop(self) -> None:
        """Stop the loop, and write the audit rows still queued; live processes stay in the table."""
        self.kernel.stop()
        if self.trail.audit is not None:
            self.trail.audit.flush(timeout=AUDIT_FLUSH_SECONDS)

    def resident_models(self) -> list[snapshots.ResidentModelInfo]:
        return snapshots.resident_models(self.kernel)

    def memory_budget(self) -> snapshots.MemoryUse:
        return snapshots.memory_use(self.kernel)

    def metrics_snapshot(self) -> snapshots.KernelSnapshot:
        return snapshots.kernel_snapshot(self.kernel)
