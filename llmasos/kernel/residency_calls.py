"""The system calls over which models are loaded: load, unload, keep-alive, the loaded models, and
which model a service or the router's decider runs on. Checked and audited as every system call is;
loading and unloading on demand need the admin capability (they spend the memory every app shares).
Mixed into `Syscalls`, as `AdminCalls` is.
"""

from __future__ import annotations

import time
from collections.abc import Callable
from typing import TYPE_CHECKING

from llmasos.errors import ModelNotFoundError, PermissionDeniedError
from llmasos.kernel import snapshots
from llmasos.model.tokenizer import Tokenizer
from llmasos.security.apps import App
from llmasos.settings import Settings

if TYPE_CHECKING:
    from llmasos.kernel.call_trail import CallTrail
    from llmasos.kernel.kernel import Kernel

#: The name a caller gives to mean "whichever model the system chooses".
DEFAULT_NAME = "default"


class ResidencyCalls:
    """Mixed into `Syscalls`, which provides `kernel`, `trail`, `settings` and `_resolve_model`."""

    kernel: Kernel
    trail: CallTrail
    settings: Settings
    _resolve_model: Callable[[str], str]  # name or alias -> the library's canonical name

    def load_model(
        self, app: App, model: str, *, keep_alive: float | None = None
    ) -> snapshots.ResidentModelInfo | None:
        """Load `model` now (admin only), staying `keep_alive` seconds after its last use (negative:
        until unloaded; None: its configured keep-alive). What is loaded, with its expiry; None if
        it is already gone again (a keep-alive of 0)."""
        with self.trail.audited(app, "models.load", model):
            self._require_admin_for(app, "load models")
            name = self.allowed_model(app, model)
            residency = self.kernel.residency
            if keep_alive is not None:
                residency.set_keep_alive(name, keep_alive)
            residency.acquire(name)
            residency.release(name)
            return self._loaded(name)

    def unload_model(self, app: App, model: str) -> dict:
        """Unload `model` (admin only): now if it is idle, else as soon as its processes end.
        ModelNotFoundError if it is not loaded."""
        with self.trail.audited(app, "models.unload", model):
            self._require_admin_for(app, "unload models")
            name = self.allowed_model(app, model)
            try:
                unloaded = self.kernel.residency.request_unload(name)
            except KeyError:
                raise ModelNotFoundError(
                    f"model {name!r} is not loaded; `llmasos ps` lists the loaded models"
                ) from None
            return {"model": name, "unloaded": unloaded, "pending": not unloaded}

    def set_keep_alive(self, app: App, model: str, seconds: float) -> None:
        """A request's `keep_alive`: `model` stays loaded `seconds` after its last use from now on
        (negative: forever; 0: unloaded as soon as it is idle). Any app that may use the model may
        ask, as Ollama's clients do with every request; a model kept so is still evicted for room."""
        name = self.allowed_model(app, model)
        self.kernel.residency.set_keep_alive(name, seconds)

    def loaded_models(self, app: App) -> list[snapshots.ResidentModelInfo]:
        """The loaded models this app may use, with their memory, keep-alive and expiry."""
        return [r for r in snapshots.resident_models(self.kernel) if app.allows("model", r.name)]

    def model_for(self, program: str, requested: str = DEFAULT_NAME) -> str:
        """The model a service runs on: the one the caller named, else the one the configuration
        names for `program` (`[services]`), else the default model."""
        if requested != DEFAULT_NAME:
            return requested
        return self.settings.services.get(program) or DEFAULT_NAME

    def decider_model(self, requested: str = DEFAULT_NAME) -> str:
        """The model the router's decider asks: the caller's, else `[router] decider`, else the default."""
        if requested != DEFAULT_NAME:
            return requested
        return self.settings.router.decider or DEFAULT_NAME

    def resolve_model(self, name: str) -> str:
        """The library's canonical name of a model name or alias; ModelNotFoundError if none."""
        return self._resolve_model(name)

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

    def _loaded(self, name: str) -> snapshots.ResidentModelInfo | None:
        return next((r for r in snapshots.resident_models(self.kernel) if r.name == name), None)

    @staticmethod
    def _require_admin_for(caller: App, what: str) -> None:
        if not caller.is_admin:
            raise PermissionDeniedError(f"app {caller.name!r} may not {what}; it needs the admin capability")
