"""Model residency: which models are loaded, within one memory budget for weights and KV together.

A model is loaded on first use (or on request: `load`, `serve --preload`) and unloaded after an
idle keep-alive, on request (`request_unload`), or earlier when another needs the room. Its
keep-alive is the last one a request or a load asked for, else its own configured one, else the
default (Ollama's 300 s); a negative one never expires, 0 unloads it as soon as it is idle. A
*held* model (`serve --preload`) neither expires nor is evicted until it is unloaded on request.

When another model needs the room, the victim is not simply the least recently used: each idle
model is valued by its recent demand times what reloading it would cost, per byte it holds, and the
least valuable go first. A model larger than the whole budget is refused with both sizes named.

Loading takes seconds, so it never happens under the kernel's lock (every other model's streams
would stall): `acquire` loads under the manager's own load lock, reserving the estimated bytes
meanwhile, and returns the engine *pinned*, so no other load can evict it before the caller has
admitted its process; `release` unpins it.
"""

from __future__ import annotations

import logging
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass, field

from llmasos.engine.protocol import Engine
from llmasos.errors import ModelUnavailableError

logger = logging.getLogger(__name__)

#: Demand is an exponentially decaying count of uses with this half-life.
DEMAND_HALF_LIFE_SECONDS = 300.0


@dataclass
class ResidentModel:
    """A loaded model and what it costs to hold and to reload."""

    name: str
    engine: Engine
    loaded_bytes: int  # measured right after loading (its charge once the engine is dropped)
    load_seconds: float  # measured: from the start of its load to its engine being ready
    last_used: float
    demand: float = 1.0  # decayed count of recent uses
    active: int = 0  # live processes on it; a model with any is never evicted
    pins: int = 0  # callers between acquire() and release(); never evicted while pinned
    held: bool = False  # loaded to stay (serve --preload): never expires or is evicted until unloaded
    demand_at: float = field(default=0.0)
    engine_bytes_at_load: int | None = None  # the engine's own reading then; its growth is charged on top

    @property
    def memory_bytes(self) -> int:
        """Its charge: what it held when loaded plus what its engine has grabbed since (the KV blocks
        and swap space it touches as it serves), not the KV pool it could grow to."""
        now = _engine_bytes(self.engine)
        if now is None or self.engine_bytes_at_load is None:
            return self.loaded_bytes
        return self.loaded_bytes + max(0, now - self.engine_bytes_at_load)

    @property
    def is_idle(self) -> bool:
        return self.active == 0 and self.pins == 0

    def touch(self, now: float) -> None:
        self.demand = self.decayed_demand(now) + 1.0
        self.demand_at = self.last_used = now

    def decayed_demand(self, now: float) -> float:
        return self.demand * 0.5 ** ((now - self.demand_at) / DEMAND_HALF_LIFE_SECONDS)

    def keep_value(self, now: float) -> float:
        """Reload seconds saved per byte held, weighted by demand: low values are evicted first."""
        return self.decayed_demand(now) * max(self.load_seconds, 1e-3) / max(self.memory_bytes, 1)


def _engine_bytes(engine: object) -> int | None:
    """The engine's own reading of what it holds; None for an engine that gives none (or none now)."""
    value = getattr(engine, "memory_bytes", None)
    return None if value is None else int(value)


def gib(n: float) -> str:
    return f"{n / 2**30:.2f} GiB"


class ResidencyManager:
    """Loads engines on demand and evicts them to stay within `budget_bytes`."""

    def __init__(
        self,
        budget_bytes: int,
        load: Callable[[str], tuple[Engine, int]],  # name -> (engine, measured bytes)
        estimate_bytes: Callable[[str], int],  # name -> bytes it will need, before loading
        keep_alive_seconds: float = 300.0,
        clock: Callable[[], float] = time.monotonic,
        model_keep_alive: dict[str, float] | None = None,  # models' own keep-alives (config.toml)
    ) -> None:
        self.budget_bytes = budget_bytes
        self._load = load
        self._estimate = estimate_bytes
        self.keep_alive_seconds = keep_alive_seconds
        self.model_keep_alive = dict(model_keep_alive or {})
        self._requested_keep_alive: dict[str, float] = {}  # the last keep-alive asked for, per model
        self.clock = clock
        self.models: dict[str, ResidentModel] = {}
        self.num_loads = 0
        self.num_evictions = 0
        self._lock = threading.RLock()  # the table; held briefly, never while loading
        self._load_lock = threading.Lock()  # one load at a time
        self._reserved = 0  # bytes set aside for the load in progress

    @property
    def used_bytes(self) -> int:
        return sum(m.memory_bytes for m in list(self.models.values())) + self._reserved

    def acquire(self, name: str) -> Engine:
        """The engine of `name`, loading it (and evicting idle models) if needed, pinned until
        `release(name)`."""
        if (engine := self._pin(name)) is not None:
            self.trim_to_budget()
            return engine
        with self._load_lock:
            if (engine := self._pin(name)) is not None:  # loaded by another caller meanwhile
                return engine
            resident = self._load_model(name, self.clock())
            with self._lock:
                self.models[name] = resident
                self._reserved = 0
            return resident.engine

    def hold(self, name: str) -> None:
        """Keep a loaded model until `request_unload` (it neither expires nor is evicted)."""
        with self._lock:
            self.models[name].held = True

    def set_keep_alive(self, name: str, seconds: float) -> None:
        """From now on `name` stays loaded `seconds` after its last use (negative: forever; 0: unloaded
        once idle), whether it is loaded yet or not; forgotten when it is unloaded."""
        with self._lock:
            if seconds == 0 and name not in self.models:
                return  # "unload it when idle" of a model that is not loaded: nothing to do
            self._requested_keep_alive[name] = seconds

    def keep_alive_of(self, name: str) -> float:
        """The seconds `name` stays loaded when idle: asked for, else its own, else the default."""
        if name in self._requested_keep_alive:
            return self._requested_keep_alive[name]
        return self.model_keep_alive.get(name, self.keep_alive_seconds)

    def expires_in(self, resident: ResidentModel) -> float | None:
        """Seconds until `resident` is unloaded if it stays idle (the whole keep-alive while it is in
        use); None if it never expires."""
        keep_alive = self.keep_alive_of(resident.name)
        if resident.held or keep_alive < 0:
            return None
        if not resident.is_idle:
            return keep_alive
        return max(0.0, resident.last_used + keep_alive - self.clock())

    def process_ended(self, name: str) -> None:
        """A process on `name` ended: one fewer active, and its keep-alive counts from now."""
        with self._lock:
            resident = self.models[name]
            resident.active -= 1
            resident.last_used = self.clock()

    def request_unload(self, name: str) -> bool:
        """Unload `name` now if it is idle (True); else drop its hold and unload it as soon as its
        processes end (False). KeyError if it is not loaded."""
        with self._lock:
            resident = self.models[name]
            resident.held = False
            if resident.is_idle:
                self.unload(name, evicted=False)
                return True
            self._requested_keep_alive[name] = 0.0
            return False

    def release(self, name: str) -> None:
        """Unpin a model pinned by `acquire`."""
        with self._lock:
            resident = self.models.get(name)
            if resident is not None and resident.pins > 0:
                resident.pins -= 1

    def _pin(self, name: str) -> Engine | None:
        with self._lock:
            resident = self.models.get(name)
            if resident is None:
                return None
            resident.pins += 1
            resident.touch(self.clock())
            return resident.engine

    def _load_model(self, name: str, now: float) -> ResidentModel:
        needed = self._estimate(name)
        if needed > self.budget_bytes:
            raise ModelUnavailableError(
                f"model {name!r} needs about {gib(needed)} but the memory budget is "
                f"{gib(self.budget_bytes)}; "
                "raise --memory-budget or use a smaller or more quantized model"
            )
        with self._lock:
            self._make_room(needed, now, for_model=name)
            self._reserved = needed
        start = self.clock()
        try:
            from llmasos.engine.threads import single_threaded

            with single_threaded():  # this is not the kernel's thread: no OpenMP pool of its own here
                engine, measured = self._load(name)
        except ModelUnavailableError:
            self._reserved = 0
            raise
        except Exception as err:  # a broken file or a device error: the model cannot serve now
            self._reserved = 0
            logger.exception("loading %s failed", name)
            raise ModelUnavailableError(
                f"model {name!r} could not be loaded: {err}. `llmasos models show {name}` says what is "
                "stored; pull it again with --force if the file is damaged"
            ) from err
        loaded = self.clock()  # its keep-alive counts from here, not from when its load began
        resident = ResidentModel(
            name=name,
            engine=engine,
            loaded_bytes=measured,
            engine_bytes_at_load=_engine_bytes(engine),
            load_seconds=loaded - start,
            last_used=loaded,
            demand=1.0,
            demand_at=now,
            pins=1,
        )
        self.num_loads += 1
        logger.info("loaded %s (%s) in %.1fs", name, gib(measured), resident.load_seconds)
        return resident

    def _make_room(self, needed: int, now: float, for_model: str) -> None:
        idle = sorted(
            (m for m in self.models.values() if m.is_idle and not m.held),
            key=lambda m: m.keep_value(now),
        )
        while self.used_bytes + needed > self.budget_bytes:
            if not idle:
                busy = ", ".join(f"{m.name} ({gib(m.memory_bytes)})" for m in self.models.values())
                raise ModelUnavailableError(
                    f"model {for_model!r} needs about {gib(needed)}; the budget is "
                    f"{gib(self.budget_bytes)} and "
                    f"models in use hold {gib(self.used_bytes)}: {busy}. Retry when they are idle"
                )
            self.unload(idle.pop(0).name)

    def unload(self, name: str, *, evicted: bool = True) -> None:
        """Drop `name` now (the caller checked it is idle); `evicted`: for room or expiry, not asked."""
        with self._lock:
            resident = self.models.pop(name)
            self._requested_keep_alive.pop(name, None)
        resident.engine = None  # type: ignore[assignment]  # drop the reference so its tensors are freed
        self.num_evictions += evicted
        logger.info("unloaded %s", name)

    def unload_all(self) -> None:
        """Drop every engine, in use or not: the kernel is closing (its mapped weight files close
        with them)."""
        with self._lock:
            names = list(self.models)
        for name in names:
            self.unload(name, evicted=False)

    def unload_expired(self) -> list[str]:
        """Unload models idle past their keep-alive, then idle models while the resident ones' KV has
        grown past the budget (`trim_to_budget`); return their names."""
        with self._lock:
            expired = [m.name for m in self.models.values() if m.is_idle and self.expires_in(m) == 0.0]
            for name in expired:
                self.unload(name)
        return expired + self.trim_to_budget()

    def trim_to_budget(self) -> list[str]:
        """Evict idle models, least valuable first, while what the resident models hold exceeds the
        budget; return their names.

        Why: a model is charged what it holds, and its KV grows with use after it was admitted (the
        pool is mapped lazily), so the models together can pass the budget after their loads fit it.
        Models in use are never evicted: they may hold more until their processes end."""
        trimmed: list[str] = []
        with self._lock:
            if self.used_bytes <= self.budget_bytes:
                return trimmed
            now = self.clock()
            idle = sorted(
                (m for m in self.models.values() if m.is_idle and not m.held), key=lambda m: m.keep_value(now)
            )
            while idle and self.used_bytes > self.budget_bytes:
                victim = idle.pop(0)
                self.unload(victim.name)
                trimmed.append(victim.name)
        return trimmed
