"""`llmasos node start` keeps its node joined: when the node's process loses the head, it waits for the
head to listen again and joins a new process; a node the head refuses is not started again.

No Ray here: the node's process is a scripted stand-in. The real head restart, with `serve --cluster`
and `node start` processes, is `test_head_restart.py` (marker cluster_slow)."""

from __future__ import annotations

import threading

import pytest

from llmasos.cluster import supervise
from llmasos.cluster.supervise import EXIT_HEAD_LOST, EXIT_REFUSED, keep_node_joined
from llmasos.errors import NodeRefusedError


class ScriptedNode:
    """A node process that ends at once with `exitcode`, or (None) runs until terminated."""

    def __init__(self, exitcode: int | None) -> None:
        self.exitcode, self.running = exitcode, exitcode is None

    def is_alive(self) -> bool:
        return self.running

    def join(self, timeout: float | None = None) -> None:
        if self.running:
            threading.Event().wait(min(timeout or 0.01, 0.01))

    def terminate(self) -> None:
        self.running, self.exitcode = False, -15


@pytest.fixture(autouse=True)
def quick_retries(monkeypatch) -> None:
    monkeypatch.setattr(supervise, "RETRY_SECONDS", (0.001,))


def test_a_node_that_loses_its_head_waits_for_it_and_joins_again() -> None:
    stop = threading.Event()
    head = iter([True, False, False, True, True] + [True] * 10)  # gone for two looks after the 1st loss
    looks: list[bool] = []
    started: list[tuple] = []
    endings = iter([EXIT_HEAD_LOST, EXIT_HEAD_LOST, None])  # the third joins and stays

    def listens(address: str) -> bool:
        looks.append(next(head))
        return looks[-1]

    def start_child(args: tuple, kwargs: dict) -> ScriptedNode:
        started.append((args, kwargs))
        child = ScriptedNode(next(endings))
        if child.running:
            threading.Timer(0.05, stop.set).start()  # the operator stops it later
        return child

    joins = keep_node_joined(
        "127.0.0.1:1", ("a", "n1"), {"threads": 1}, stop, start_child=start_child, listens=listens
    )
    assert joins == 3
    assert started == [(("a", "n1"), {"threads": 1})] * 3  # the same node, joined again each time
    assert looks == [True, False, False, True, True]  # it waited while the head was gone


def test_a_node_the_head_refuses_is_not_started_again() -> None:
    started = []

    def start_child(args: tuple, kwargs: dict) -> ScriptedNode:
        started.append(args)
        return ScriptedNode(EXIT_REFUSED)

    with pytest.raises(NodeRefusedError, match="cluster_secret"):
        keep_node_joined(
            "127.0.0.1:1", (), {}, threading.Event(), start_child=start_child, listens=lambda a: True
        )
    assert len(started) == 1
