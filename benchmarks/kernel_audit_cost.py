"""What auditing costs the kernel's loop: wall milliseconds its thread spends ending one process
(`Kernel._finish`: the audit rows, counters, the final event), and the loop's whole run, over a
scripted engine (no model: the kernel's own work only) with the audit log on.

    .venv/bin/python benchmarks/kernel_audit_cost.py [--processes 400] [--concurrent 32]

`--processes` short generations (4 tokens), `--concurrent` of them live at once, are run to their
end by the kernel's loop in this thread while an admitting thread keeps the table full. Printed:
p50 / p95 / total of the wall time inside `_finish` on the kernel's thread, the loop's wall time,
and the admissions' p50 / p95 (their start rows). Run it on two trees (PYTHONPATH) in the same
sitting to compare: before the audit writer thread, `_finish` wrote the end row and its anchor
(one SQLite commit and one fsync) on the kernel's thread, and admission wrote the start row under
the kernel's lock.
"""

from __future__ import annotations

import argparse
import os
import statistics
import sys
import tempfile
import threading
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--processes", type=int, default=400)
    parser.add_argument("--concurrent", type=int, default=32)
    args = parser.parse_args()
    with tempfile.TemporaryDirectory(prefix="llmasos-kernel-audit-") as home:
        os.environ["LLMASOS_HOME"] = home
        print(measure(args.processes, args.concurrent))


def measure(processes: int, concurrent: int) -> str:
    from llmasos.engine.sampling import SamplingParams
    from llmasos.kernel.kernel import Kernel, KernelConfig
    from llmasos.kernel.residency import ResidencyManager
    from llmasos.kernel.syscalls import Syscalls
    from llmasos.security.apps import App, AppRegistry
    from llmasos.security.audit import AuditLog
    from tests.helpers.fake_engine import FakeEngine

    residency = ResidencyManager(1 << 30, lambda name: (FakeEngine(max_num_seqs=concurrent), 1), lambda n: 1)
    kernel = Kernel(residency, KernelConfig(idle_sleep_seconds=0.001))
    syscalls = Syscalls(kernel, AppRegistry(), audit=AuditLog())
    finish_ms: list[float] = []
    finish = kernel._finish

    def timed_finish(*args, **kwargs):
        started = time.perf_counter()
        finish(*args, **kwargs)
        finish_ms.append((time.perf_counter() - started) * 1e3)

    kernel._finish = timed_finish
    app, params = App("bench"), SamplingParams(max_tokens=4, temperature=0)
    admit_ms: list[float] = []
    room = threading.Semaphore(concurrent)

    def admit_all() -> None:
        for i in range(processes):
            room.acquire()
            started = time.perf_counter()
            process = syscalls.generate(app, "m", f"prompt {i}", params)
            admit_ms.append((time.perf_counter() - started) * 1e3)
            kernel.subscribe(process.pid, lambda event: event.finished and room.release())

    started = time.perf_counter()
    kernel.start()
    admitting = threading.Thread(target=admit_all)
    admitting.start()
    admitting.join()
    while len(finish_ms) < processes or any(not p.is_terminal for p in kernel.table.values()):
        time.sleep(0.005)
    kernel.stop()
    wall = time.perf_counter() - started
    syscalls.stop()
    q = statistics.quantiles
    return (
        f"{processes} processes, {concurrent} at once: kernel thread in _finish p50 "
        f"{statistics.median(finish_ms):.2f} ms, p95 {q(finish_ms, n=20)[18]:.2f} ms, total "
        f"{sum(finish_ms) / 1e3:.2f} s of {wall:.2f} s; admission p50 {statistics.median(admit_ms):.2f} ms, "
        f"p95 {q(admit_ms, n=20)[18]:.2f} ms; load average {os.getloadavg()[0]:.1f}"
    )


if __name__ == "__main__":
    main()
