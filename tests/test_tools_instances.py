"""The pools of tool-model instances: each instance serves one call at a time, calls beyond a pool's
size wait for a free one, and no call holds a lock that stops the others; in the process pool the
instances live in worker processes. Ordering is shown with events, never timing."""

from __future__ import annotations

import multiprocessing
import os
import threading

import pytest

from llmasos.errors import LLMasOSError
from llmasos.tools.instances import InstancePool, ProcessInstancePool
from tests.helpers import pool_workers

WAIT_S = 30  # only bounds a failing test; a passing one never waits this long


def test_two_calls_use_two_instances_at_once() -> None:
    made: list[object] = []
    pool = InstancePool(lambda: made.append(object()) or made[-1], size=2)
    events: list[str] = []
    first_inside, second_inside = threading.Event(), threading.Event()

    def first() -> None:
        with pool.use():
            events.append("first in")
            first_inside.set()
            assert second_inside.wait(WAIT_S), "the second call waited for the first"
            events.append("first out")

    def second() -> None:
        with pool.use():
            events.append("second in")
            second_inside.set()

    threads = [threading.Thread(target=first)]
    threads[0].start()
    first_inside.wait(WAIT_S)
    threads.append(threading.Thread(target=second))
    threads[1].start()
    for t in threads:
        t.join(WAIT_S)
    assert events == ["first in", "second in", "first out"]
    assert len(made) == 2


def test_calls_beyond_the_size_wait_for_a_free_instance_and_reuse_it() -> None:
    made: list[object] = []
    pool = InstancePool(lambda: made.append(object()) or made[-1], size=1)
    release_first, first_inside = threading.Event(), threading.Event()
    seen: list[object] = []

    def first() -> None:
        with pool.use() as instance:
            seen.append(instance)
            first_inside.set()
            release_first.wait(WAIT_S)

    def second() -> None:
        with pool.use() as instance:
            seen.append(instance)

    a = threading.Thread(target=first)
    a.start()
    first_inside.wait(WAIT_S)
    b = threading.Thread(target=second)
    b.start()
    b.join(0.2)  # gives the second call a chance to (wrongly) get in; passing never depends on it
    assert len(seen) == 1 and b.is_alive()
    release_first.set()
    a.join(WAIT_S)
    b.join(WAIT_S)
    assert seen[0] is seen[1] and len(made) == 1


def test_an_instance_whose_call_failed_is_dropped_and_a_failed_load_frees_its_slot() -> None:
    made: list[object] = []
    pool = InstancePool(lambda: made.append(object()) or made[-1], size=1)
    with pytest.raises(RuntimeError), pool.use():
        raise RuntimeError("the decoder is in an unknown state now")
    with pool.use() as instance:
        assert instance is made[1]  # a fresh one, not the one the failure left behind

    def broken_loader() -> object:
        raise ImportError("no such package")

    failing = InstancePool(broken_loader, size=1)
    for _ in range(3):  # would block on the second try if the slot leaked
        with pytest.raises(ImportError), failing.use():
            pass


def test_size_must_be_positive() -> None:
    with pytest.raises(ValueError, match="at least 1"):
        InstancePool(object, size=0)


@pytest.fixture
def process_pool():
    pools: list[ProcessInstancePool] = []

    def make(size: int) -> ProcessInstancePool:
        pools.append(ProcessInstancePool(pool_workers.make_instance, size=size, what="test model"))
        return pools[-1]

    yield make
    for pool in pools:
        pool.shutdown()


def test_instances_live_in_worker_processes_and_are_reused(process_pool) -> None:
    pool = process_pool(2)
    served = [pool.run(pool_workers.identify) for _ in range(6)]
    assert os.getpid() not in {pid for pid, _ in served} and len({pid for pid, _ in served}) <= 2
    assert {number for _, number in served} == {0}  # one instance per worker, made once


def test_two_calls_run_at_once_in_two_workers(process_pool) -> None:
    """The first call waits, inside its worker, for the second to finish in the other one; in a
    pool of one the second could not start, and the first call's wait would fail."""
    pool = process_pool(2)
    with multiprocessing.get_context("spawn").Manager() as manager:
        first_inside, second_done = manager.Event(), manager.Event()
        first = pool.submit(pool_workers.wait_for_other, first_inside, second_done)
        assert first_inside.wait(60)
        second_pid = pool.run(pool_workers.mark_done, second_done)
        assert first.result(60) is True
    assert second_pid != os.getpid()


def test_an_error_comes_back_whole_and_its_instance_is_replaced(process_pool) -> None:
    pool = process_pool(1)
    assert pool.run(pool_workers.identify)[1] == 0
    with pytest.raises(ValueError, match="the model choked"):
        pool.run(pool_workers.fail, "the model choked")
    assert pool.run(pool_workers.identify)[1] == 1  # the instance the error left behind was dropped


def test_a_worker_that_dies_is_an_error_and_the_pool_starts_afresh(process_pool) -> None:
    pool = process_pool(1)
    before = pool.run(pool_workers.identify)[0]
    with pytest.raises(LLMasOSError, match="test model worker process stopped unexpectedly; try again"):
        pool.run(pool_workers.die)
    after, number = pool.run(pool_workers.identify)
    assert after not in (before, os.getpid()) and number == 0


def test_process_pool_size_must_be_positive() -> None:
    with pytest.raises(ValueError, match="at least 1"):
        ProcessInstancePool(pool_workers.make_instance, size=0, what="test model")
