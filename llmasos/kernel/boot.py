"""Starting a kernel on this machine: the memory budget, and engines loaded from the model library."""

from __future__ import annotations

import dataclasses
import sys
from collections.abc import Callable
from pathlib import Path
from typing import Any

from llmasos.config import EngineConfig
from llmasos.kernel.backpressure import OutputLimits
from llmasos.kernel.kernel import Kernel, KernelConfig
from llmasos.kernel.residency import ResidencyManager
from llmasos.kernel.syscalls import Syscalls
from llmasos.library.store import ModelStore
from llmasos.security.admin import ensure_admin
from llmasos.security.apps import App, AppRegistry
from llmasos.security.audit import AuditLog
from llmasos.settings import Settings, load_settings

#: Share of the memory that is free at start-up that models may take by default.
DEFAULT_BUDGET_FRACTION = 0.8


def default_memory_budget() -> int:
    """80% of free VRAM when CUDA is present, else 80% of available RAM."""
    if _may_have_gpu():
        import torch

        if torch.cuda.is_available():
            free, _ = torch.cuda.mem_get_info()
            return int(free * DEFAULT_BUDGET_FRACTION)
    for line in Path("/proc/meminfo").read_text().splitlines():
        if line.startswith("MemAvailable:"):
            return int(int(line.split()[1]) * 1024 * DEFAULT_BUDGET_FRACTION)
    return 4 * 2**30


def _may_have_gpu() -> bool:
    """Whether asking torch about CUDA is worth importing it (seconds) at boot: torch is loaded
    already, or the machine has NVIDIA or ROCm device files. A server then starts without torch and
    loads it with its first model (see api/preloading.py)."""
    return "torch" in sys.modules or any(Path("/dev").glob("nvidia*")) or Path("/dev/kfd").exists()


def library_loader(
    engine_config: EngineConfig,
    store: ModelStore | None = None,
    settings: Settings | None = None,
    budget_bytes: int | None = None,
) -> tuple[Callable[[str], tuple[Any, int]], Callable[[str], int]]:
    """(load, estimate) for the residency manager: engines on library models, and their sizes. With
    `settings`, a model with its own context length in them gets it. With `budget_bytes`, each engine's
    KV pool is at most what the budget leaves beside the model's weights."""
    store = store or ModelStore()
    settings = settings or Settings()
    # The engine's modules (and torch, seconds to import) are imported when a model is about to
    # load, not at boot: a server answers and resumes its workflow runs first.

    def load(name: str) -> tuple[Any, int]:
        from llmasos.engine.engine import LLMEngine

        config = settings.engine_config(engine_config, name)
        if budget_bytes is not None:  # a pool the budget could never hold would only mislead admission
            room = max(budget_bytes - estimate(name), 0)
            config = dataclasses.replace(config, kv_cache_bytes=min(config.kv_cache_bytes, room))
        engine = LLMEngine.from_path(str(store.model_path(name)), config)
        if (written := engine.loaded.packed_cache_written) is not None:
            store.record_packed_cache(name, *written)
        return engine, engine.memory_bytes

    def estimate(name: str) -> int:
        from llmasos.engine.engine import resolve_device
        from llmasos.engine.model_runner import packed_weight_format

        # What the engine holds right after its load: its weights and swap reserve. Packed at load
        # (int4 on the CPU, the default) an engine holds under a byte a parameter (Qwen2.5-1.5B:
        # 1.28 GB for 1.54 B; SmolLM2: 140 MB for 135 M); float weights 4 bytes a parameter at most.
        # Not its KV pool: that is mapped lazily and charged as it is touched (ResidentModel.memory_bytes).
        packed = packed_weight_format(engine_config, resolve_device(engine_config.device)) is not None
        per_parameter = 1 if packed else 4
        return store.get(name).parameter_count * per_parameter + engine_config.swap_reserve_bytes

    return load, estimate


def boot(
    config: KernelConfig | None = None,
    memory_budget: int | None = None,
    *,
    audit: bool = True,
    interface: str = "",
    settings: Settings | None = None,
    engines: tuple[Callable[[str], tuple[Any, int]], Callable[[str], int]] | None = None,
    resolve_model: Callable[[str], str] | None = None,
) -> Syscalls:
    """A kernel on the library's models with the persisted apps and the audit log under
    $LLMASOS_HOME; call `.kernel.start()` to run it. `settings` (default: config.toml and the
    environment, `load_settings`) size the engines, set keep-alives and the memory budget unless
    `memory_budget` is given, and name the models services use. `engines`: (load, estimate) to use
    instead of this machine's library (`llmasos.cluster.runtime.cluster_loader` on a cluster);
    `resolve_model`: a model name or alias -> its canonical name, instead of the library's (a
    cluster's also knows the models its nodes serve: `llmasos.cluster.registry.model_resolver`)."""
    settings = settings or load_settings().settings
    config = config or KernelConfig()
    config = dataclasses.replace(config, engine=settings.engine_config(config.engine))
    if config.output is None:
        kernel_settings = settings.kernel
        limits = OutputLimits(kernel_settings.output_buffer_tokens, kernel_settings.reader_timeout)
        config = dataclasses.replace(config, output=limits)
    store = ModelStore()
    budget = memory_budget or settings.models.memory_budget or default_memory_budget()
    load, estimate = engines or library_loader(config.engine, store, settings, budget)
    residency = ResidencyManager(
        budget,
        load,
        estimate,
        keep_alive_seconds=settings.models.keep_alive,
        model_keep_alive=settings.model_keep_alive(),
    )
    kernel = Kernel(residency, config)
    return Syscalls(
        kernel,
        AppRegistry(),
        resolve_model=resolve_model or (lambda name: store.get(name).name),
        audit=AuditLog() if audit else None,
        interface=interface,
        settings=settings,
    )


def boot_as_admin(interface: str) -> tuple[Syscalls, App]:
    """A kernel started in this process, and the local admin app to act as: what the SDK's local mode
    and `llmasos run`/`chat` use instead of a server."""
    syscalls = boot(interface=interface)
    app, _ = ensure_admin(syscalls.apps)
    syscalls.kernel.start()
    return syscalls, app
