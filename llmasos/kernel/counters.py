"""Per-app and per-model counters of what the kernel did, ready for /metrics."""

from __future__ import annotations

import threading
from collections import Counter, defaultdict
from dataclasses import dataclass, field


@dataclass
class AppCounters:
    processes: Counter = field(default_factory=Counter)  # by final state: finished, failed, cancelled
    errors: Counter = field(default_factory=Counter)  # by error type
    tokens_computed: int = 0  # prefill + decode
    tokens_generated: int = 0
    preemptions: int = 0
    wait_seconds_total: float = 0.0  # queued until first scheduled, summed
    waits: int = 0
    calls: Counter = field(default_factory=Counter)  # system calls by (call, outcome)


@dataclass
class ModelCounters:
    tokens_computed: int = 0
    tokens_generated: int = 0
    steps: int = 0
    step_seconds_total: float = 0.0
    preemptions: int = 0


class KernelCounters:
    """Monotonic counters; readers take `snapshot()`."""

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self.apps: dict[str, AppCounters] = defaultdict(AppCounters)
        self.models: dict[str, ModelCounters] = defaultdict(ModelCounters)

    def computed(self, app: str, model: str, tokens: int) -> None:
        with self._lock:
            self.apps[app].tokens_computed += tokens
            self.models[model].tokens_computed += tokens

    def generated(self, app: str, model: str, tokens: int) -> None:
        with self._lock:
            self.apps[app].tokens_generated += tokens
            self.models[model].tokens_generated += tokens

    def preempted(self, app: str, model: str) -> None:
        with self._lock:
            self.apps[app].preemptions += 1
            self.models[model].preemptions += 1

    def waited(self, app: str, seconds: float) -> None:
        with self._lock:
            self.apps[app].wait_seconds_total += seconds
            self.apps[app].waits += 1

    def finished(self, app: str, model: str, state: str, error: Exception | None) -> None:
        with self._lock:
            self.apps[app].processes[state] += 1
            if error is not None:
                self.apps[app].errors[getattr(error, "type", type(error).__name__)] += 1

    def call(self, app: str, call: str, outcome: str, error_type: str | None = None) -> None:
        """One system call and how it went (ok, denied, error, finished, ...)."""
        with self._lock:
            self.apps[app].calls[(call, outcome)] += 1
            if error_type is not None:
                self.apps[app].errors[error_type] += 1

    def model_step(self, model: str, tokens: int, seconds: float) -> None:
        with self._lock:
            self.models[model].steps += 1
            self.models[model].step_seconds_total += seconds

    def snapshot(self) -> dict:
        with self._lock:
            return {
                "apps": {name: _plain(c) for name, c in self.apps.items()},
                "models": {name: _plain(c) for name, c in self.models.items()},
            }


def _plain(counters: object) -> dict:
    return {k: dict(v) if isinstance(v, Counter) else v for k, v in vars(counters).items()}
