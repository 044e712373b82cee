"""Who may use torch's intra-op threads: the one thread that runs engine steps.

torch's CPU ops run on OpenMP, and libgomp gives every thread that starts a parallel region its own
pool of workers. SmolLM2 decoded 100-120 tok/s in the thread that loaded it, and 42-45 tok/s in a
second thread once the loading thread had a pool of its own (measured on a 2-core CPU); with the load
run single-threaded, the second thread decoded 89-94 tok/s and the load took 11.8 s instead of ~10.
The likely cause: with more pooled threads than cores, libgomp lets idle workers spin only briefly,
so each of a decode step's ~150 parallel regions waits for a sleeping worker to wake.

So the kernel's loop claims the intra-op threads (`claim_compute_threads`), and work that runs in
other threads (model loads, embeddings) runs inside `single_threaded()`: inline, no pool.
"""

from __future__ import annotations

import threading
from collections.abc import Iterator
from contextlib import contextmanager

import torch

#: torch's intra-op thread count when this module was first imported (one per physical core unless
#: the user set OMP_NUM_THREADS or torch.set_num_threads earlier): what the compute thread claims.
DEFAULT_COMPUTE_THREADS = torch.get_num_threads()

_compute_thread: threading.Thread | None = None


def claim_compute_threads(threads: int = 0) -> None:
    """Make the calling thread the one that runs parallel torch work, with `threads` intra-op threads
    (0: the default above)."""
    global _compute_thread
    _compute_thread = threading.current_thread()
    torch.set_num_threads(threads or DEFAULT_COMPUTE_THREADS)


@contextmanager
def single_threaded() -> Iterator[None]:
    """Run torch ops inline in this thread for the block (unless it is the compute thread)."""
    if threading.current_thread() is _compute_thread:
        yield
        return
    before = torch.get_num_threads()
    torch.set_num_threads(1)
    try:
        yield
    finally:
        torch.set_num_threads(before)
