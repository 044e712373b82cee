"""The overview: one read of everything a live view shows (the web console, `llmasos top`).

A page that refreshes every second would otherwise call a dozen routes, each writing an audit row:
a console left open would add 40,000 rows a day of "ps" and "apps.list" that bury what the log is
for. So the overview is one system call that reads, like a `/metrics` scrape, is counted in the
metrics (`overview`) but writes no audit row; whoever opens a live view is audited once, when it
opens (`watch_overview`); and everything that changes state goes through the audited calls.

What an app sees follows the rules of the calls it summarises: an admin sees every app, process,
model and audit row; any other app its own processes, its own app, its own audit rows and the
models it may use.
"""

from __future__ import annotations

import math
import time
from collections.abc import Collection
from typing import TYPE_CHECKING, Any

from llmasos.data import inventory
from llmasos.data.app_data import app_data
from llmasos.data.quota import usage
from llmasos.data.schema import app_folder
from llmasos.errors import InvalidRequestError
from llmasos.kernel import snapshots
from llmasos.kernel.latency_window import LatencyWindow
from llmasos.library.store import ModelStore
from llmasos.security.apps import App, AppRegistry

if TYPE_CHECKING:
    from llmasos.kernel.call_trail import CallTrail
    from llmasos.kernel.kernel import Kernel
    from llmasos.kernel.process import Process

#: The parts of an overview, each built only when asked for.
SECTIONS = frozenset({"processes", "apps", "models", "latency", "nodes", "audit"})
#: Ended processes an overview still lists (newest first), so a page sees what just finished.
ENDED_SHOWN = 30
#: Audit rows an overview carries (newest first).
AUDIT_SHOWN = 100
#: Seconds an app's storage figure is reused: summing its chunks scans its data, which a refresh a
#: second must not do; storage changes slowly next to processes.
STORAGE_SECONDS = 10.0
#: Keys of audit rows a live view may show: never the prompt or output an app opted to keep.
_AUDIT_FIELDS = (
    "id",
    "ts",
    "app",
    "call",
    "target",
    "allowed",
    "outcome",
    "reason",
    "pid",
    "tokens_in",
    "tokens_out",
    "duration_s",
    "interface",
)


class OverviewCalls:
    """Mixed into `Syscalls`, which provides `kernel`, `apps`, `trail`, `latency_window`, `count`,
    `describe`, `node_snapshot`, `_named_app` and `_audit_log`."""

    kernel: Kernel
    apps: AppRegistry
    trail: CallTrail
    latency_window: LatencyWindow
    count: Any
    describe: Any
    node_snapshot: Any
    _named_app: Any
    _audit_log: Any

    def watch_overview(self, caller: App, interface: str = "console") -> None:
        """Audit that `caller` opened a live view (its refreshes are then counted, not audited)."""
        with self.trail.audited(caller, "overview.watch", interface):
            pass

    def overview(self, caller: App, sections: Collection[str] | None = None) -> dict[str, Any]:
        """Processes, apps with usage against quotas, models with memory and KV, latency over the
        last hour, nodes and recent audit rows, as `caller` may see them, read at one moment.

        `sections` (a subset of SECTIONS; all when None) names the parts to build: a live page
        asks only for what its visible view shows, so the server reads nothing else."""
        wanted = SECTIONS if sections is None else frozenset(sections)
        if unknown := wanted - SECTIONS:
            raise InvalidRequestError(
                f"no overview section {sorted(unknown)[0]!r}; ask for some of {', '.join(sorted(SECTIONS))}"
            )
        self.count(caller.name, "overview")
        out: dict[str, Any] = {
            "caller": {"app": caller.name, "admin": caller.is_admin},
            "now": self.kernel.clock(),
        }
        needs_snapshot = wanted & {"apps", "models"}
        snap = snapshots.kernel_snapshot(self.kernel) if needs_snapshot else None
        processes = self._visible_processes(caller) if wanted & {"processes", "apps", "models"} else []
        if "processes" in wanted:
            out["processes"] = [{"node": "local"} | self.describe(p) for p in processes]
        if "apps" in wanted:
            out["apps"] = self._app_usage(caller, processes, snap)
        if "models" in wanted:
            out["models"] = self._model_state(caller, snap, processes)
        if "latency" in wanted:
            out["latency"] = self.latency_window.series(lambda app: caller.is_admin or app == caller.name)
        if "nodes" in wanted:
            out["nodes"] = self._visible_nodes(caller)
        if "audit" in wanted:
            out["audit"] = self._recent_audit(caller)
        return out

    def data_inventory(self, caller: App, name: str, limit: int = inventory.DEFAULT_LIMIT) -> dict[str, Any]:
        """App `name`'s largest documents, vector stores and conversations (its own, or any app's
        for an admin), with its usage against its quota. Audited: it is read when a view opens,
        not on a timer."""
        with self.trail.audited(caller, "data.inventory", name):
            target = self._named_app(caller, name, "see other apps' data")
            if not (app_folder(target.identity) / "data.db").exists():  # never stored anything: none made
                empty = {"documents": [], "vector_stores": [], "conversations": []}
                return {"app": name, **empty, "usage": None}
            data = app_data(target.identity)
            listed = inventory.inventory(data, limit)
            with data.db.transaction() as conn:
                return {"app": name, **listed, "usage": usage(conn).to_dict()}

    def _visible_nodes(self, caller: App) -> list[dict]:
        """The cluster's nodes (empty on a single box). A node's capabilities, models and health are
        no app's data; the count of processes on it is the caller's own unless it is the admin."""
        nodes = self.node_snapshot()
        if caller.is_admin or not nodes:
            return nodes
        with self.kernel.lock:
            mine = [
                p.node
                for p in self.kernel.table.values()
                if p.app_id == caller.identity and not p.is_terminal
            ]
        return [{**node, "processes": mine.count(node["name"])} for node in nodes]

    def _visible_processes(self, caller: App) -> list[Process]:
        """Live processes, then the most recently ended, that `caller` may see (as `ps`)."""
        with self.kernel.lock:
            mine = [p for p in self.kernel.table.values() if caller.is_admin or p.app_id == caller.identity]
        live = sorted((p for p in mine if not p.is_terminal), key=lambda p: p.pid)
        ended = sorted((p for p in mine if p.is_terminal), key=lambda p: p.pid, reverse=True)
        return live + ended[:ENDED_SHOWN]

    def _app_usage(self, caller: App, processes: list[Process], snap: snapshots.KernelSnapshot) -> list[dict]:
        apps = self.apps.list() if caller.is_admin else [self._own_app(caller)]
        now = self.kernel.clock()
        with self.kernel.lock:
            used = {a.name: self.kernel.limiter.used(a.name, now) for a in apps}
        counters = snap.counters["apps"]
        storage = self._storage(apps)
        rows = []
        for app in apps:
            live = [p for p in processes if p.app == app.name and not p.is_terminal]
            totals = counters.get(app.name, {})
            rows.append(
                {
                    "name": app.name,
                    "priority": app.priority,
                    "weight": app.weight,
                    "admin": app.is_admin,
                    "tokens_per_minute": app.tokens_per_minute,
                    "tokens_last_minute": used[app.name],
                    "max_concurrent": app.max_concurrent,
                    "running": sum(p.state.value == "running" for p in live),
                    "max_queued": app.max_queued,
                    "queued": sum(p.state.value == "queued" for p in live),
                    "suspended": sum(p.state.value == "suspended" for p in live),
                    "blocked": sum(p.state.value == "blocked" for p in live),  # waiting for readers
                    "tokens_computed": totals.get("tokens_computed", 0),
                    "tokens_generated": totals.get("tokens_generated", 0),
                    "keys": self.apps.key_hints(app.name),
                    **storage[app.identity],
                }
            )
        return rows

    def _storage(self, apps: list[App]) -> dict[str, dict]:
        """Each app's stored bytes and items against its data quota, read at most every
        STORAGE_SECONDS; an app that never stored anything has no data folder, and none is made."""
        cache: dict[str, tuple[float, dict]] = self.__dict__.setdefault("_storage_cache", {})
        now = time.monotonic()
        out = {}
        for app in apps:
            read_at, figures = cache.get(app.identity, (-math.inf, {}))
            if now - read_at > STORAGE_SECONDS:
                figures = {"storage_bytes": 0, "storage_items": 0, "storage_max_bytes": None}
                if (app_folder(app.identity) / "data.db").exists():
                    with app_data(app.identity).db.transaction() as conn:
                        used = usage(conn)
                    figures = {
                        "storage_bytes": used.bytes,
                        "storage_items": used.items,
                        "storage_max_bytes": used.max_bytes,
                    }
                cache[app.identity] = (now, figures)
            out[app.identity] = figures
        return out

    def _own_app(self, caller: App) -> App:
        """The caller's app as stored now (its priority may have been edited since its key was read);
        an unregistered caller (`anonymous`) as it is."""
        return self.apps.get(caller.name) if caller.id and self.apps.exists(caller.id) else caller

    def _model_state(
        self, caller: App, snap: snapshots.KernelSnapshot, processes: list[Process]
    ) -> dict[str, Any]:
        resident = {r.name: r for r in snap.resident_models}
        library = [m.name for m in ModelStore().list() if caller.allows("model", m.name)]
        models = []
        for name in sorted(set(library) | set(resident) if caller.is_admin else library):
            info = resident.get(name)
            stats = snap.kv_stats.get(name)
            models.append(
                {
                    "name": name,
                    "resident": info is not None,
                    "node": "local",
                    "memory_bytes": info.memory_bytes if info else None,
                    "active_processes": info.active_processes if info else 0,
                    "held": info.held if info else False,
                    "expires_in_seconds": info.expires_in_seconds if info else None,
                    "kv": _kv(stats, processes, name) if stats is not None else None,
                }
            )
        return {
            "models": models,
            "memory_budget_bytes": snap.memory.budget_bytes,
            "memory_used_bytes": snap.memory.used_bytes,
        }

    def _recent_audit(self, caller: App) -> list[dict]:
        rows = self._audit_log().query(app=None if caller.is_admin else caller.name, limit=AUDIT_SHOWN)
        return [{k: row.get(k) for k in _AUDIT_FIELDS} for row in rows]


def _kv(stats: Any, processes: list[Process], model: str) -> dict[str, Any]:
    """A model's KV pool, its prefix-cache hit rate, and the KV each app's live processes hold.

    The engine does not report blocks per sequence, so an app's share is estimated from its live
    processes' context (prompt + output tokens, in whole blocks): what those sequences hold while
    they run or are suspended with their KV kept."""
    per_app: dict[str, int] = {}
    for p in processes:
        if p.model == model and not p.is_terminal and p.state.value != "queued":
            blocks = math.ceil((p.tokens_in + p.tokens_out) / max(stats.block_size, 1))
            per_app[p.app] = per_app.get(p.app, 0) + blocks
    return {
        "blocks_total": stats.num_blocks,
        "blocks_used": stats.num_blocks - stats.num_free_blocks,
        "blocks_cached": stats.num_cached_blocks,
        "block_size": stats.block_size,
        "prefix_cache_query_tokens": stats.prefix_cache_queries,
        "prefix_cache_hit_tokens": stats.prefix_cache_hits,
        "prefix_cache_hit_rate": stats.prefix_cache_hits / stats.prefix_cache_queries
        if stats.prefix_cache_queries
        else None,
        "blocks_by_app_estimated": per_app,
    }
