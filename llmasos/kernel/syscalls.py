"""System calls: the one narrow entry point through which every interface reaches the kernel.

Each call names the calling app, is checked against its capabilities and quotas, and is charged
to it. A denied call raises the error from `llmasos.errors` that says why and what to do.
"""

from __future__ import annotations

from collections.abc import Iterator
from typing import Any

from llmasos.engine.sampling import SamplingParams
from llmasos.errors import (
    ContextWindowExceededError,
    InvalidRequestError,
    PermissionDeniedError,
    ProcessNotFoundError,
    QuotaExceededError,
)
from llmasos.kernel.admission import refuse_if_full
from llmasos.kernel.kernel import Event, Kernel, Work
from llmasos.kernel.process import PriorityClass, Process, ProcessState
from llmasos.security.apps import App, AppRegistry


class Syscalls:
    """generate / chat / cancel / status / ps and app management, for one kernel."""

    def __init__(self, kernel: Kernel, apps: AppRegistry, resolve_model: Any = None) -> None:
        self.kernel = kernel
        self.apps = apps
        # name or alias -> the library's canonical name; raises ModelNotFoundError
        self._resolve_model = resolve_model or (lambda name: name)

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
        return self._start(
            app,
            model,
            params,
            priority,
            lambda tok: tok.encode(prompt) if isinstance(prompt, str) else list(prompt),
        )

    def chat(
        self,
        app: App,
        model: str,
        messages: list[dict],
        params: SamplingParams | None = None,
        *,
        priority: str | None = None,
    ) -> Process:
        """Start a chat completion: the model's chat template over `messages`."""
        return self._start(app, model, params, priority, lambda tok: tok.encode_chat(messages))

    def events(self, app: App, pid: int, timeout: float | None = None) -> Iterator[Event]:
        """The process's events (text deltas, then a final one)."""
        self._visible(app, pid)
        return self.kernel.events(pid, timeout)

    def _start(
        self, app: App, model: str, params: SamplingParams | None, priority: str | None, encode
    ) -> Process:
        params = params or SamplingParams()
        name = self._resolve_model(model)
        if not app.allows("model", name):
            raise PermissionDeniedError(
                f"app {app.name!r} may not use model {name!r}; an admin can grant model:{name}"
            )
        process_class = self._priority(app, priority)
        kernel = self.kernel
        now = kernel.clock()
        with kernel.lock:
            live = [p for p in kernel.table.values() if p.app == app.name and not p.is_terminal]
            queued_total = sum(p.state is ProcessState.QUEUED for p in kernel.table.values())
            rate = kernel.rate(name)
            ahead = sum(kernel.remaining_tokens(p) for p in kernel.table.values() if not p.is_terminal)
            refuse_if_full(
                app.name,
                sum(p.state is ProcessState.QUEUED for p in live),
                queued_total,
                kernel.config.queue,
                app.max_queued,
                ahead,
                rate,
            )
            if app.max_concurrent and len(live) >= app.max_concurrent + (app.max_queued or 0):
                raise QuotaExceededError(f"app {app.name!r} has {len(live)} live processes, its limit", 1.0)
            engine = kernel.residency.acquire(name)
        prompt_ids = encode(engine.tokenizer)
        if not prompt_ids:
            raise InvalidRequestError("the prompt is empty; give at least one token of input")
        if len(prompt_ids) >= engine.context_length:
            over = len(prompt_ids) - engine.context_length + 1
            raise ContextWindowExceededError(
                f"the prompt has {len(prompt_ids)} tokens but {name}'s context window is "
                f"{engine.context_length}; shorten it by at least {over} tokens"
            )
        wanted = len(prompt_ids) + params.max_tokens
        retry = kernel.limiter.retry_after(app.name, app.tokens_per_minute, wanted, now)
        if retry is not None:
            raise QuotaExceededError(
                f"app {app.name!r} would exceed its {app.tokens_per_minute} tokens per minute"
                + (
                    f"; retry in {retry:.0f} s"
                    if retry != float("inf")
                    else f": this one request needs {wanted}; lower max_tokens"
                ),
                retry if retry != float("inf") else 60.0,
            )
        process = Process(
            pid=kernel.new_pid(),
            app=app.name,
            model=name,
            priority=process_class,
            created_at=now,
            weight=app.weight,
            tokens_in=len(prompt_ids),
        )
        work = Work(
            prompt_ids=prompt_ids,
            params=params,
            cache_namespace=app.cache_namespace,
            max_concurrent=app.max_concurrent,
        )
        kernel.admit(process, work)
        return process

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

    # ---- process control ----------------------------------------------------------------------

    def cancel(self, app: App, pid: int) -> Process:
        process = self._visible(app, pid)
        if process.is_terminal:
            raise InvalidRequestError(f"process {pid} already ended ({process.state}); nothing to cancel")
        self.kernel.cancel(process)
        return process

    def status(self, app: App, pid: int) -> dict:
        return self.describe(self._visible(app, pid))

    def ps(self, app: App, *, include_finished: bool = True) -> list[dict]:
        """Every process the app may see (its own; all of them for an admin)."""
        with self.kernel.lock:
            processes = [
                p
                for p in self.kernel.table.values()
                if (app.is_admin or p.app == app.name) and (include_finished or not p.is_terminal)
            ]
        return [self.describe(p) for p in sorted(processes, key=lambda p: p.pid)]

    def describe(self, process: Process) -> dict:
        now = self.kernel.clock()
        info = {
            "pid": process.pid,
            "app": process.app,
            "model": process.model,
            "state": process.state.value,
            "priority": process.priority.label,
            "tokens_in": process.tokens_in,
            "tokens_out": process.tokens_out,
            "waited_seconds": round(process.waited_at(now), 3),
            "running_seconds": round(process.running_at(now), 3),
            "preemptions": process.num_preemptions,
            "reason": process.reason,
        }
        if process.state is ProcessState.QUEUED:
            info["estimated_wait_seconds"] = round(self.kernel.estimated_wait(process), 3)
        return info

    def _visible(self, app: App, pid: int) -> Process:
        process = self.kernel.table.get(pid)
        if process is None or not (app.is_admin or process.app == app.name):
            raise ProcessNotFoundError(f"no process {pid} of app {app.name!r}; `llmasos ps` lists them")
        return process

    # ---- apps (admin) -------------------------------------------------------------------------

    def create_app(self, caller: App, app: App) -> App:
        self._require_admin(caller, "create apps")
        return self.apps.create(app)

    def remove_app(self, caller: App, name: str) -> None:
        self._require_admin(caller, "remove apps")
        self.apps.remove(name)

    def list_apps(self, caller: App) -> list[App]:
        return self.apps.list() if caller.is_admin else [caller]

    @staticmethod
    def _require_admin(caller: App, what: str) -> None:
        if not caller.is_admin:
            raise PermissionDeniedError(f"app {caller.name!r} may not {what}; it needs the admin capability")
