"""One OpenMP pool: the kernel's thread owns torch's intra-op threads, other threads run torch inline
(llmasos/engine/threads.py says why: a second pool made decoding ~2.5x slower on a 2-core CPU)."""

from __future__ import annotations

import threading
from types import SimpleNamespace

import torch

from llmasos.engine import threads
from llmasos.kernel.kernel import Kernel
from llmasos.kernel.residency import ResidencyManager


def in_thread(fn):
    result = {}
    worker = threading.Thread(target=lambda: result.setdefault("value", fn()))
    worker.start()
    worker.join()
    return result["value"]


def test_single_threaded_runs_inline_and_restores_the_count() -> None:
    def probe() -> tuple[int, int, int]:
        torch.set_num_threads(2)
        with threads.single_threaded():
            inside = torch.get_num_threads()
        return 2, inside, torch.get_num_threads()

    assert in_thread(probe) == (2, 1, 2)


def test_the_compute_thread_keeps_its_threads_inside_single_threaded() -> None:
    def probe() -> int:
        threads.claim_compute_threads(2)
        with threads.single_threaded():
            return torch.get_num_threads()

    try:
        assert in_thread(probe) == 2
    finally:
        threads._compute_thread = None


def test_models_load_single_threaded_and_the_kernel_loop_claims_the_threads() -> None:
    seen: dict[str, int] = {}

    def load(name: str):
        seen["load"] = torch.get_num_threads()
        return SimpleNamespace(memory_bytes=0), 1  # residency reads what the engine holds

    residency = ResidencyManager(1 << 30, load, lambda name: 1)
    torch.set_num_threads(2)
    residency.acquire("m")  # a request's thread (here the test's) loads the model
    assert seen["load"] == 1 and torch.get_num_threads() == 2

    kernel = Kernel(residency)
    original_tick = kernel.tick

    def tick() -> int:
        seen["tick"] = torch.get_num_threads()
        seen["owner"] = threads._compute_thread is threading.current_thread()
        return original_tick()

    kernel.tick = tick
    kernel.start()
    try:
        kernel._wake.set()
        for _ in range(200):
            if "tick" in seen:
                break
            threading.Event().wait(0.01)
    finally:
        kernel.stop()
        threads._compute_thread = None
    assert seen["owner"] and seen["tick"] == threads.DEFAULT_COMPUTE_THREADS
