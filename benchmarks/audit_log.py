"""What sealing and anchoring the audit log costs: milliseconds per row written, and the time to
verify the whole log, beside an unkeyed, unanchored SQLite append measured in the same run.

    .venv/bin/python benchmarks/audit_log.py [--rows 500]

A generation writes two rows (start and end), every other system call one. Each row is one SQLite
commit (WAL, fsync) plus the anchor's atomic rewrite (one more fsync); on a quiet machine with an
SSD both are well under a millisecond, on a busy one they dominate.
"""

from __future__ import annotations

import argparse
import hashlib
import json
import sqlite3
import statistics
import tempfile
import threading
import time
from pathlib import Path

from llmasos.security.audit import AuditLog, AuditRecord


def _per_row(write, rows: int) -> list[float]:
    times = []
    for i in range(rows):
        started = time.perf_counter()
        write(i)
        times.append((time.perf_counter() - started) * 1e3)
    return times


def _plain_sqlite(folder: Path, rows: int) -> list[float]:
    """The old scheme's work: one WAL commit of a row chained with sha256, no key, no anchor."""
    conn = sqlite3.connect(folder / "plain.db", isolation_level=None)
    conn.execute("PRAGMA journal_mode=WAL")
    conn.execute("CREATE TABLE audit (id INTEGER PRIMARY KEY, body TEXT, prev TEXT, hash TEXT)")
    head = ["0" * 64]

    def write(i: int) -> None:
        body = json.dumps(
            {"app": "bench", "call": "ps", "outcome": "ok", "target": str(i), "ts": time.time()}
        )
        digest = hashlib.sha256((head[0] + body).encode()).hexdigest()
        conn.execute("BEGIN IMMEDIATE")
        conn.execute("INSERT INTO audit (body, prev, hash) VALUES (?, ?, ?)", (body, head[0], digest))
        conn.execute("COMMIT")
        head[0] = digest

    return _per_row(write, rows)


def _threads_writing(log: AuditLog, threads: int, rows: int) -> float:
    """Rows per second with `threads` writing `rows` in all at once."""

    def write(count: int) -> None:
        for i in range(count):
            log.record(AuditRecord(app="bench", call="ps", outcome="ok", target=str(i)))

    workers = [threading.Thread(target=write, args=(rows // threads,)) for _ in range(threads)]
    started = time.perf_counter()
    for worker in workers:
        worker.start()
    for worker in workers:
        worker.join()
    elapsed = time.perf_counter() - started
    assert log.verify().intact
    return threads * (rows // threads) / elapsed


def _summary(times: list[float]) -> str:
    ordered = sorted(times)
    p95 = ordered[int(0.95 * (len(ordered) - 1))]
    return f"median {statistics.median(times):.2f} ms, p95 {p95:.2f} ms"


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--rows", type=int, default=500)
    parser.add_argument("--threads", type=int, default=4, help="writers at once for the burst figure")
    args = parser.parse_args()
    with tempfile.TemporaryDirectory() as tmp:
        folder = Path(tmp)
        plain = _plain_sqlite(folder, args.rows)
        log = AuditLog(folder / "audit.db")
        sealed = _per_row(
            lambda i: log.record(AuditRecord(app="bench", call="ps", outcome="ok", target=str(i))), args.rows
        )
        started = time.perf_counter()
        report = log.verify()
        verify_s = time.perf_counter() - started
        burst_rows_per_s = _threads_writing(AuditLog(folder / "burst.db"), args.threads, args.rows)
    print(f"rows written: {args.rows}")
    print(f"unkeyed sqlite append (old scheme's work): {_summary(plain)}")
    print(f"sealed + anchored AuditLog.record:         {_summary(sealed)}")
    print(f"ratio of medians: {statistics.median(sealed) / statistics.median(plain):.2f}x")
    print(
        f"{args.threads} threads writing at once (as request threads and the kernel's do): "
        f"{burst_rows_per_s:.0f} rows/s ({1e3 / burst_rows_per_s:.2f} ms a row)"
    )
    state = "intact" if report.intact else "; ".join(report.problems)
    print(f"verify of {report.rows} rows: {verify_s * 1e3:.0f} ms ({state})")


if __name__ == "__main__":
    main()
