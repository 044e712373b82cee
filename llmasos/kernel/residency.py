"""Model residency: which models are loaded, within one memory budget for weights and KV together.

A model is loaded on first use and unloaded after an idle keep-alive, or earlier when another
needs the room. The victim is not simply the least recently used: each idle model is valued by
its recent demand times what reloading it would cost, per byte it holds, and the least valuable
go first. A model larger than the whole budget is refused with both sizes named.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

from llmasos.errors import ModelUnavailableError

logger = logging.getLogger(__name__)

#: Demand is an exponentially decaying count of uses with this half-life.
DEMAND_HALF_LIFE_SECONDS = 300.0


@dataclass
class ResidentModel:
    """A loaded model and what it costs to hold and to reload."""

    name: str
    engine: Any
    memory_bytes: int  # measured after loading: weights + KV pool
    load_seconds: float
    last_used: float
    demand: float = 1.0  # decayed count of recent uses
    active: int = 0  # live processes on it; a model with any is never evicted
    demand_at: float = field(default=0.0)

    def touch(self, now: float) -> None:
        self.demand = self.decayed_demand(now) + 1.0
        self.demand_at = self.last_used = now

    def decayed_demand(self, now: float) -> float:
        return self.demand * 0.5 ** ((now - self.demand_at) / DEMAND_HALF_LIFE_SECONDS)

    def keep_value(self, now: float) -> float:
        """Reload seconds saved per byte held, weighted by demand: low values are evicted first."""
        return self.decayed_demand(now) * max(self.load_seconds, 1e-3) / max(self.memory_bytes, 1)


def gib(n: float) -> str:
    return f"{n / 2**30:.2f} GiB"


class ResidencyManager:
    """Loads engines on demand and evicts them to stay within `budget_bytes`."""

    def __init__(
        self,
        budget_bytes: int,
        load: Callable[[str], tuple[Any, int]],  # name -> (engine, measured bytes)
        estimate_bytes: Callable[[str], int],  # name -> bytes it will need, before loading
        keep_alive_seconds: float = 300.0,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        self.budget_bytes = budget_bytes
        self._load = load
        self._estimate = estimate_bytes
        self.keep_alive_seconds = keep_alive_seconds
        self.clock = clock
        self.models: dict[str, ResidentModel] = {}
        self.num_loads = 0
        self.num_evictions = 0

    @property
    def used_bytes(self) -> int:
        return sum(m.memory_bytes for m in self.models.values())

    def acquire(self, name: str) -> Any:
        """The engine of `name`, loading it (and evicting idle models) if needed."""
        now = self.clock()
        resident = self.models.get(name)
        if resident is None:
            resident = self._load_model(name, now)
        resident.touch(now)
        return resident.engine

    def _load_model(self, name: str, now: float) -> ResidentModel:
        needed = self._estimate(name)
        if needed > self.budget_bytes:
            raise ModelUnavailableError(
                f"model {name!r} needs about {gib(needed)} but the memory budget is "
                f"{gib(self.budget_bytes)}; "
                "raise --memory-budget or use a smaller or more quantized model"
            )
        self._make_room(needed, now, for_model=name)
        start = self.clock()
        try:
            engine, measured = self._load(name)
        except ModelUnavailableError:
            raise
        except Exception as err:  # a broken file or a device error: the model cannot serve now
            logger.exception("loading %s failed", name)
            raise ModelUnavailableError(
                f"model {name!r} could not be loaded: {err}. `llmasos models show {name}` says what is "
                "stored; pull it again with --force if the file is damaged"
            ) from err
        resident = ResidentModel(
            name=name,
            engine=engine,
            memory_bytes=measured,
            load_seconds=self.clock() - start,
            last_used=now,
            demand=0.0,
            demand_at=now,
        )
        self.models[name] = resident
        self.num_loads += 1
        logger.info("loaded %s (%s) in %.1fs", name, gib(measured), resident.load_seconds)
        return resident

    def _make_room(self, needed: int, now: float, for_model: str) -> None:
        idle = sorted((m for m in self.models.values() if m.active == 0), key=lambda m: m.keep_value(now))
        while self.used_bytes + needed > self.budget_bytes:
            if not idle:
                busy = ", ".join(f"{m.name} ({gib(m.memory_bytes)})" for m in self.models.values())
                raise ModelUnavailableError(
                    f"model {for_model!r} needs about {gib(needed)}; the budget is "
                    f"{gib(self.budget_bytes)} and "
                    f"models in use hold {gib(self.used_bytes)}: {busy}. Retry when they are idle"
                )
            self.unload(idle.pop(0).name)

    def unload(self, name: str) -> None:
        resident = self.models.pop(name)
        resident.engine = None  # drop the reference so its tensors are freed
        self.num_evictions += 1
        logger.info("unloaded %s", name)

    def unload_expired(self) -> list[str]:
        """Unload models idle past the keep-alive; return their names."""
        now = self.clock()
        expired = [
            m.name
            for m in self.models.values()
            if m.active == 0 and now - m.last_used > self.keep_alive_seconds
        ]
        for name in expired:
            self.unload(name)
        return expired
