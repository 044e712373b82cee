"""System calls: the one narrow entry point through which every interface reaches the kernel.

Each call names the calling app, is checked against its capabilities and quotas, and is charged
to it. A denied call raises the error from `llmasos.errors` that says why and what to do. Every
call, allowed or not, becomes one row of the audit log (when the kernel has one): at once for a
call that is over when it returns, and when its process ends for `generate` and `chat`.
"""

from __future__ import annotations

import time
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from typing import Any, TypeVar

from llmasos.data.app_data import close_open_app_data
from llmasos.data.pseudonym_store import pseudonym_store
from llmasos.errors import LLMasOSError, PermissionDeniedError
from llmasos.kernel import snapshots
from llmasos.kernel.admin_calls import AdminCalls
from llmasos.kernel.admission import TOKENIZING_THREADS, PendingAdmissions
from llmasos.kernel.call_trail import DENIALS, CallTrail
from llmasos.kernel.conversation_calls import ConversationCalls
from llmasos.kernel.data_calls import DataCalls
from llmasos.kernel.generation_calls import GenerationCalls
from llmasos.kernel.kernel import Kernel
from llmasos.kernel.latency import LatencyHistograms
from llmasos.kernel.latency_window import LatencyWindow
from llmasos.kernel.overview_calls import OverviewCalls
from llmasos.kernel.privacy_calls import PrivacyCalls
from llmasos.kernel.process_calls import ProcessCalls
from llmasos.kernel.residency_calls import ResidencyCalls
from llmasos.kernel.stats_calls import StatsCalls
from llmasos.privacy.guard import PrivacyGuard
from llmasos.security.apps import App, AppRegistry
from llmasos.security.audit import AuditLog
from llmasos.security.data_keys import close_data_keys
from llmasos.settings import Settings

T = TypeVar("T")

#: Seconds a stopping kernel waits for its queued audit rows (a few milliseconds unless the disk stalls).
AUDIT_FLUSH_SECONDS = 10.0


class Syscalls(
    GenerationCalls,
    ProcessCalls,
    AdminCalls,
    ResidencyCalls,
    DataCalls,
    ConversationCalls,
    StatsCalls,
    PrivacyCalls,
    OverviewCalls,
):
    """The system calls of one kernel: (from `GenerationCalls`) generate and chat, (from
    `ProcessCalls`) cancel / status / ps, (from `AdminCalls`) apps, models and the audit log, (from
    `ResidencyCalls`) which models an app may use, loading and unloading them, (from `DataCalls`) each
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

    # ---- the kernel's life and state, for the interfaces that show it ---------------------------
    # Unaudited: health checks and scrapes come every few seconds, and show no app's data beyond
    # counters; the routes decide who may see them (/metrics needs the admin key).

    @property
    def is_running(self) -> bool:
        return self.kernel.is_running

    def start(self) -> None:
        """Run the kernel's scheduling loop in its own thread (a server at start-up), and the audit
        log's writer in its own: both at the caller's priority, which a server's HTTP threads then
        lower for themselves alone (every generation waits on its audit rows, as on its steps)."""
        self.kernel.start()
        if self.trail.audit is not None:
            self.trail.audit.start_writer()

    def stop(self) -> None:
        """Stop the loop, and write the audit rows still queued; live processes stay in the table."""
        self.kernel.stop()
        if self.trail.audit is not None:
            self.trail.audit.flush(timeout=AUDIT_FLUSH_SECONDS)

    def close(self) -> None:
        """Stop, then close what this kernel opened: the ingestion and tokenizing threads, the
        engines (their mapped weight files), the audit log, the apps' registry, and this process's
        handles on the apps' data and data keys. Whoever booted the kernel closes it once it is done
        with it (`llmasos serve` as it exits, the CLI's admin commands, tests); without it each kernel
        that served a generation left 9 or more descriptors open, and a test process holding over
        1,023 failed select()."""
        self.stop()
        self.close_ingestion()
        self._tokenizing.shutdown(wait=True, cancel_futures=True)
        self.kernel.residency.unload_all()
        if self.trail.audit is not None:
            self.trail.audit.close()
        self.apps.close()
        close_open_app_data()
        close_data_keys()

    def resident_models(self) -> list[snapshots.ResidentModelInfo]:
        return snapshots.resident_models(self.kernel)

    def memory_budget(self) -> snapshots.MemoryUse:
        return snapshots.memory_use(self.kernel)

    def metrics_snapshot(self) -> snapshots.KernelSnapshot:
        return snapshots.kernel_snapshot(self.kernel)
