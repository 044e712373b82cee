"""What the interfaces may read of the kernel's state: frozen snapshots taken under its lock.

`/healthz`, `/os/models`, `/metrics` and the CLI show the resident models, the memory budget and
the counters. They get them from system calls as these values rather than by walking the kernel's
objects (its table, its residency manager, the engines), so that the kernel's insides can change —
a remote engine, another residency policy — without any interface noticing.
"""

from __future__ import annotations

from collections import Counter
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from llmasos.kernel.kernel import Kernel


@dataclass(frozen=True)
class ResidentModelInfo:
    """One loaded model."""

    name: str
    memory_bytes: int  # what it holds now: weights + the KV and swap memory it has touched
    active_processes: int  # live processes on it
    # Seconds until it is unloaded if it stays idle (the whole keep-alive while it is in use; None:
    # never). A reading that changes by the second, so two snapshots of the same state still compare equal.
    expires_in_seconds: float | None = field(default=None, compare=False)
    # Its keep-alive now (negative: forever), how long it took to load, and whether it is held
    # (serve --preload: never expires or is evicted until unloaded).
    keep_alive_seconds: float | None = field(default=None, compare=False)
    load_seconds: float | None = field(default=None, compare=False)
    held: bool = field(default=False, compare=False)


@dataclass(frozen=True)
class MemoryUse:
    """The memory budget for models (weights + KV together) and how much of it is held."""

    budget_bytes: int
    used_bytes: int  # loaded models, and the estimate of one being loaded


@dataclass(frozen=True)
class ModelLimits:
    """How much one model can take: what services size their prompts and batches by."""

    context_length: int  # tokens a prompt and its output may take together (window or KV pool)
    kv_tokens: int  # tokens the model's whole KV pool holds, shared by its processes


@dataclass(frozen=True)
class KernelSnapshot:
    """Everything /metrics shows, read at once."""

    counters: dict  # KernelCounters.snapshot(): {"apps": {...}, "models": {...}}
    live_processes: Counter  # (app, model, state) -> live processes in that state
    resident_models: list[ResidentModelInfo]
    kv_stats: dict[str, Any]  # model -> its engine's EngineStats (KV blocks, prefix cache)
    memory: MemoryUse


def resident_models(kernel: Kernel) -> list[ResidentModelInfo]:
    """The loaded models, by name."""
    with kernel.lock:
        residents = list(kernel.residency.models.values())
    return _infos(residents, kernel.residency)


def _infos(residents: list, residency: Any) -> list[ResidentModelInfo]:
    infos = (
        ResidentModelInfo(
            r.name,
            r.memory_bytes,
            r.active,
            residency.expires_in(r),
            keep_alive_seconds=residency.keep_alive_of(r.name),
            load_seconds=round(r.load_seconds, 3),
            held=r.held,
        )
        for r in residents
    )
    return sorted(infos, key=lambda r: r.name)


def memory_use(kernel: Kernel) -> MemoryUse:
    return MemoryUse(kernel.residency.budget_bytes, kernel.residency.used_bytes)


def model_limits(engine: Any) -> ModelLimits:
    stats = engine.stats()
    return ModelLimits(
        context_length=min(engine.context_length, engine.max_sequence_tokens),
        kv_tokens=stats.num_blocks * stats.block_size,
    )


def kernel_snapshot(kernel: Kernel) -> KernelSnapshot:
    with kernel.lock:
        live = Counter((p.app, p.model, p.state.value) for p in kernel.table.values() if not p.is_terminal)
        residents = list(kernel.residency.models.values())
    # Engines' stats are read outside the lock; a model unloaded meanwhile has no engine left.
    engines = [(r.name, r.engine) for r in residents]
    return KernelSnapshot(
        counters=kernel.counters.snapshot(),
        live_processes=live,
        resident_models=_infos(residents, kernel.residency),
        kv_stats={name: engine.stats() for name, engine in engines if engine is not None},
        memory=memory_use(kernel),
    )
