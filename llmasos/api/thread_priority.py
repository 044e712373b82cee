"""The HTTP side of a server yields the CPU to the kernel's: a per-thread niceness for the event loop.

On a small machine the engine's step is the work every stream waits on, and it runs on OpenMP
workers that must all be on a core at once: each of a decode step's ~150 parallel regions waits for
its slowest worker, so a runnable HTTP thread that takes a worker's core stalls the whole step, not
just its own share. Whatever a client makes the event loop do (parse a 4 MB body, answer a flood of
bad keys, set up and tear down a storm of streams) then slows every app's tokens. Linux keeps a
niceness per thread, and threads inherit their creator's: the event loop's thread raises its own
once the kernel's thread has started (from it, so the kernel keeps the niceness it was started
with), and the threads it starts later (the request thread pool, the tokenizing pool) run at the
loop's. The audit writer starts with the kernel (`Syscalls.start`), at its priority: a stream's
headers wait for its start row and its `[DONE]` for its end row, and niced it made each wait 60-70 ms
at 32 streams (benchmarks/request_phases.py, load ~10: 26-38 ms at the kernel's priority, a batch being
two fsyncs of ~4 ms). Raising niceness needs no privilege; lowering it back does, so it is done once,
in the server's process only.

It is off by default (`[server] http_niceness = 0`, settings.py says why): niced, every request
waited for its threads at each hand-off while the engine was busy, which cost each stream more
than the abusive clients it kept from the engine's cores.
"""

from __future__ import annotations

import logging
import os
import threading

logger = logging.getLogger(__name__)


def thread_niceness(native_id: int | None = None) -> int:
    """The niceness of a thread (by its native id; the calling thread by default)."""
    return os.getpriority(os.PRIO_PROCESS, native_id or threading.get_native_id())


def yield_cpu_to_the_kernel(steps: int) -> bool:
    """Raise the calling thread's niceness by `steps` (at most to 19), relative to what it was: a
    server started at nice -15 or 5 keeps its HTTP threads the same distance below its kernel's.
    Whether it changed; a platform without per-thread niceness keeps the thread as it is."""
    if steps <= 0 or not hasattr(os, "setpriority"):
        return False
    tid = threading.get_native_id()
    try:
        niceness = min(19, thread_niceness(tid) + steps)
        if niceness == thread_niceness(tid):
            return False
        os.setpriority(os.PRIO_PROCESS, tid, niceness)
    except OSError as err:  # a sandbox that forbids it: serve as before
        logger.info("could not lower the HTTP thread's priority: %s", err)
        return False
    return True
