"""The pool of tool-model instances: each instance serves one call at a time, calls beyond the pool's
size wait for a free one, and no call holds a lock that stops the others. Ordering is shown with
events, never timing."""

from __future__ import annotations

import threading

import pytest

from llmasos.tools.instances import InstancePool

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
