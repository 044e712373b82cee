"""Audit rows are written off the kernel's loop (issue 21, the serving path): a disk that stalls on
an audit write stalls no tick and holds no lock the kernel needs, a process's final event still goes
out only once its end row is durable, and a burst of rows costs one transaction and one anchor."""

from __future__ import annotations

import queue
import threading

import pytest

from llmasos.engine.sampling import SamplingParams
from llmasos.errors import ProcessNotFoundError
from llmasos.kernel.kernel import Kernel, KernelConfig
from llmasos.kernel.residency import ResidencyManager
from llmasos.kernel.syscalls import Syscalls
from llmasos.security import audit_seal
from llmasos.security.apps import App, AppRegistry
from llmasos.security.audit import AuditLog, AuditRecord
from tests.helpers.fake_engine import FakeEngine
from tests.kernel.test_kernel import FakeClock

WAIT = 10.0  # seconds before a test calls a wait hung (the behaviour under test takes milliseconds)


class StallingDisk:
    """Holds audit writes of rows with the chosen outcomes until released, as a stalled disk would."""

    def __init__(self, log: AuditLog, outcomes: set[str]) -> None:
        self.outcomes = outcomes
        self.released = threading.Event()
        self.stalled = threading.Event()  # a write is being held now
        self._write = log.record_many
        log.record_many = self.record_many  # type: ignore[method-assign]

    def record_many(self, rows):
        if any(row.record.outcome in self.outcomes for row in rows):
            self.stalled.set()
            assert self.released.wait(WAIT), "the test never released the disk"
        return self._write(rows)


def audited_kernel(llmasos_home) -> tuple[Kernel, Syscalls, AuditLog]:
    clock = FakeClock()
    residency = ResidencyManager(
        10_000, lambda name: (FakeEngine(max_num_seqs=4), 1000), lambda n: 1000, clock=clock
    )
    kernel = Kernel(residency, KernelConfig(), clock=clock)
    log = AuditLog()
    return kernel, Syscalls(kernel, AppRegistry(), audit=log), log


def in_thread(fn) -> threading.Thread:
    thread = threading.Thread(target=fn, daemon=True)
    thread.start()
    return thread


def test_a_stalled_end_row_stalls_no_tick_and_holds_back_only_its_final_event(llmasos_home) -> None:
    kernel, sys, log = audited_kernel(llmasos_home)
    disk = StallingDisk(log, {"finished"})
    short, long = App("short"), App("long")
    first = sys.generate(short, "m", "hi", SamplingParams(max_tokens=2, temperature=0))
    other = sys.generate(long, "m", "hi", SamplingParams(max_tokens=40, temperature=0))
    ticking = in_thread(kernel.run_until_idle)  # before the fix, its first _finish waited on the disk
    ticking.join(WAIT)
    assert not ticking.is_alive(), "the kernel's loop waited on the audit log's disk"
    assert disk.stalled.wait(WAIT)  # the writer thread took the end row (and holds it)
    assert kernel.table[other.pid].tokens_out == 40  # the other app's generation went on meanwhile
    events = sys.events(short, first.pid, timeout=WAIT)
    assert [e.text for e in (next(events), next(events))] == ["t10 ", "t11 "]
    with pytest.raises(queue.Empty):  # not sent before its end row is durable
        next(sys.events(short, first.pid, timeout=0.2))

    disk.released.set()
    final = next(sys.events(short, first.pid, timeout=WAIT))
    assert final.finished and final.finish_reason == "length"
    rows = [r for r in log.query() if r["pid"] == first.pid]
    end, start = rows  # newest first
    assert (start["outcome"], end["outcome"], end["opens"]) == ("started", "finished", start["id"])
    assert not start["unfinished"] and log.verify().intact


def test_admission_writes_its_start_row_outside_the_kernels_lock(llmasos_home) -> None:
    """The start row is durable before admission returns, but written while the lock is free: the
    kernel keeps ticking other apps while one admission waits on the disk."""
    kernel, sys, log = audited_kernel(llmasos_home)
    disk = StallingDisk(log, {"started"})
    admitted: list = []
    admitting = in_thread(
        lambda: admitted.append(sys.generate(App("new"), "m", "x", SamplingParams(max_tokens=3)))
    )
    assert disk.stalled.wait(WAIT)
    assert kernel.lock.acquire(timeout=WAIT), "admission held the kernel's lock while writing its row"
    kernel.lock.release()
    assert not admitted  # it waits for its start row to be durable
    disk.released.set()
    admitting.join(WAIT)
    assert admitted and any(r["pid"] == admitted[0].pid and r["outcome"] == "started" for r in log.query())


def test_a_burst_of_rows_is_one_transaction_with_one_anchor(llmasos_home, monkeypatch) -> None:
    log = AuditLog()
    log.record(AuditRecord(app="a", call="ps", outcome="ok"))  # the key and the first anchor
    disk = StallingDisk(log, {"denied"})
    anchors: list = []
    real_write_anchor = audit_seal.write_anchor
    monkeypatch.setattr(
        "llmasos.security.audit.write_anchor", lambda *a: (anchors.append(a[1]), real_write_anchor(*a))
    )
    log.submit(AuditRecord(app="a", call="chat", outcome="denied", allowed=False))
    assert disk.stalled.wait(WAIT)
    starts = [log.submit(AuditRecord(app="a", call="chat", outcome="started", pid=i)) for i in range(50)]
    for pid, start in enumerate(starts):
        log.submit(AuditRecord(app="a", call="chat", outcome="finished", pid=pid), opens=start)
    done = threading.Event()
    log.after_written(done.set)
    disk.released.set()
    assert done.wait(WAIT)
    assert len(anchors) == 2  # the stalled row's batch, then the 100 queued behind it in one
    rows = {r["id"]: r for r in log.query(limit=200)}
    ends = [r for r in rows.values() if r["outcome"] == "finished"]
    assert len(ends) == 50 and all(rows[r["opens"]]["pid"] == r["pid"] for r in ends)
    assert log.verify().intact


def test_a_cancel_for_a_departed_client_queues_its_row_instead_of_waiting_on_the_disk(llmasos_home) -> None:
    """The server cancels a dropped stream from its event loop: that cancel's audit row goes to the
    writer thread, so a disk that stalls (or a storm of disconnects, each a commit and an anchor
    fsync) does not stall every other stream of that loop."""
    _, sys, log = audited_kernel(llmasos_home)
    app = App("storm")
    process = sys.generate(app, "m", "hi", SamplingParams(max_tokens=40))
    disk = StallingDisk(log, {"ok", "cancelled"})
    cancelling = in_thread(lambda: sys.cancel(app, process.pid, reason="the client disconnected", wait=False))
    cancelling.join(WAIT)
    assert not cancelling.is_alive(), "the cancel waited on the audit log's disk"
    assert process.state.value == "cancelled" and process.reason == "the client disconnected"
    assert disk.stalled.wait(WAIT)  # the writer thread holds the row meanwhile
    disk.released.set()
    assert log.flush(WAIT)
    rows = [r for r in log.query() if r["call"] == "cancel"]
    assert [(r["app"], r["target"], r["outcome"]) for r in rows] == [("storm", str(process.pid), "ok")]
    assert log.verify().intact


def test_abandoning_a_departed_clients_process_writes_its_end_row_and_no_cancel_row(
    llmasos_home,
) -> None:
    """The server's cancel for a client that left is no call of the app's: the process's end row
    (cancelled, with the reason) records it; the app's own `cancel` still writes its row."""
    kernel, sys, log = audited_kernel(llmasos_home)
    app = App("storm")
    dropped = sys.generate(app, "m", "hi", SamplingParams(max_tokens=40))
    with pytest.raises(ProcessNotFoundError):  # another app's process is not found, as for cancel
        sys.abandon(App("other"), dropped.pid, "the client disconnected")
    sys.abandon(app, dropped.pid, "the client disconnected")
    assert dropped.state.value == "cancelled" and dropped.reason == "the client disconnected"
    sys.abandon(app, dropped.pid, "the client disconnected")  # already ended: nothing more
    owned = sys.generate(app, "m", "hi", SamplingParams(max_tokens=40))
    sys.cancel(app, owned.pid)
    kernel.run_until_idle()
    assert log.flush(WAIT)
    rows = sorted(log.query(app="storm"), key=lambda row: row["id"])
    by_pid = {pid: [(r["call"], r["outcome"]) for r in rows if r["pid"] == pid or r["target"] == str(pid)]
              for pid in (dropped.pid, owned.pid)}  # fmt: skip
    assert by_pid[dropped.pid] == [("generate", "started"), ("generate", "cancelled")]
    assert sorted(by_pid[owned.pid]) == [("cancel", "ok"), ("generate", "cancelled"), ("generate", "started")]
    assert [r["reason"] for r in rows if r["pid"] == dropped.pid and r["outcome"] == "cancelled"] == [
        "the client disconnected"
    ]
    assert log.verify().intact
