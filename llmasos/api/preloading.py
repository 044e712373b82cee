"""The models a server preloads, loaded in the background while it already answers.

A server used to load them before it listened; a restarted server then resumed its workflow runs
only after torch and every preloaded model were in memory (issue 25: restart-to-progress 37.6 s on a
busy machine, most of it importing torch). Now the HTTP layer and the kernel import no torch, the
server listens and resumes runs at once, and steps that need no model go on while the models load;
a request for a model that is still loading waits for that load (the residency manager loads each
model once). `/healthz` answers 503 `loading` until the preloads are done, so whoever waits for a
ready server still gets one with its models in memory.
"""

from __future__ import annotations

import logging
import threading
from typing import Any

from llmasos.errors import LLMasOSError
from llmasos.security.apps import App

logger = logging.getLogger("llmasos.serve")


class Preloading:
    """Loads `models` (canonical names) for `admin` in a thread of its own, once `start`ed."""

    def __init__(self, syscalls: Any, admin: App, models: tuple[str, ...]) -> None:
        self.syscalls = syscalls
        self.admin = admin
        self.models = models
        self.failed: dict[str, str] = {}  # model -> why it could not be loaded
        self._done = threading.Event()
        self._loading: str | None = None

    @property
    def is_done(self) -> bool:
        return self._done.is_set()

    @property
    def loading(self) -> list[str]:
        """The models not loaded yet (the one loading now first)."""
        if self.is_done:
            return []
        pending = list(self.models)
        if self._loading in pending:
            pending = pending[pending.index(self._loading) :]
        return pending

    def start(self) -> None:
        if not self.models:
            self._done.set()
            return
        threading.Thread(target=self._run, name="llmasos-preload", daemon=True).start()

    def wait(self, timeout: float | None = None) -> bool:
        return self._done.wait(timeout)

    def _run(self) -> None:
        try:
            for model in self.models:
                self._loading = model
                try:
                    seconds = self.syscalls.preload(self.admin, model, keep=True)
                    logger.info("preloaded %s in %.1f s", model, seconds)
                except LLMasOSError as err:  # too big for the budget, a broken file: serve without it
                    self.failed[model] = err.message
                    logger.error("could not preload %s: %s", model, err.message)
                except Exception as err:
                    self.failed[model] = f"{type(err).__name__}: {err}"
                    logger.exception("could not preload %s", model)
        finally:
            self._done.set()
