"""Keeping a node joined: `llmasos node start` runs the node in a child process and starts it again
whenever it loses the head, once the head listens again (a head restarted by `serve --cluster`).

Why a child process: a Ray driver whose head is gone cannot reconnect to a new head (a new cluster
id), and Ray ends such a process on its own after its reconnect timeout. The parent holds no Ray
state, so it survives, waits for the head's port, and joins a fresh child, which proves the secret
to the new head's registry as the first did. A child refused for a wrong secret is not restarted.
"""

from __future__ import annotations

import logging
import multiprocessing
import socket
import threading
from collections.abc import Callable
from typing import Any

from llmasos.errors import ClusterUnavailableError, NodeRefusedError

logger = logging.getLogger(__name__)

#: How a node's child process ends: stopped on purpose, refused by the head, or it lost the head.
EXIT_STOPPED, EXIT_REFUSED, EXIT_HEAD_LOST = 0, 3, 4
#: Seconds between tries to reach a head that is gone, growing to the last.
RETRY_SECONDS = (1.0, 2.0, 5.0)


def head_listens(address: str, timeout: float = 1.0) -> bool:
    """Whether something accepts connections at the head's HOST:PORT."""
    host, port = address.rsplit(":", 1)
    try:
        with socket.create_connection((host, int(port)), timeout=timeout):
            return True
    except OSError:
        return False


def run_node_process(node_args: tuple, node_kwargs: dict) -> None:
    """The child: `runtime.run_node` until stopped, its ending told by the exit status."""
    import sys

    from llmasos.cluster.runtime import run_node

    try:
        run_node(*node_args, **node_kwargs)
    except NodeRefusedError as err:
        print(f"error: {err}", file=sys.stderr, flush=True)
        sys.exit(EXIT_REFUSED)
    except ClusterUnavailableError as err:
        print(f"node: {err}", file=sys.stderr, flush=True)
        sys.exit(EXIT_HEAD_LOST)
    sys.exit(EXIT_STOPPED)


def keep_node_joined(
    address: str,
    node_args: tuple,
    node_kwargs: dict,
    stop: threading.Event,
    *,
    start_child: Callable[[tuple, dict], Any] | None = None,
    listens: Callable[[str], bool] = head_listens,
) -> int:
    """Run the node (`run_node(*node_args, **node_kwargs)`) in a child process until `stop` is set,
    starting it again each time it loses the head, once the head listens again. Returns how many
    times it joined; raises NodeRefusedError if the head refused it. `start_child` (tests): a
    function that starts a child and returns it (`is_alive()`, `join(timeout)`, `exitcode`,
    `terminate()`), by default a spawned process running `run_node_process`."""
    start_child = start_child or _spawn
    joins = 0
    while not stop.is_set():
        if not _wait_for_head(address, stop, listens):
            break
        child = start_child(node_args, node_kwargs)
        joins += 1
        while child.is_alive() and not stop.is_set():
            child.join(0.5)
        if stop.is_set():
            child.terminate()
            child.join(60)
            break
        if child.exitcode == EXIT_REFUSED:
            raise NodeRefusedError(
                f"the head at {address} refused this node; copy its $LLMASOS_HOME/cluster_secret here"
            )
        logger.warning(
            "node lost the head at %s (exit %s); joining again when it is back", address, child.exitcode
        )
    return joins


def _wait_for_head(address: str, stop: threading.Event, listens: Callable[[str], bool]) -> bool:
    """Wait until the head listens (True) or `stop` is set (False)."""
    for attempt in range(1 << 30):
        if stop.is_set():
            return False
        if listens(address):
            return True
        if attempt == 0:
            logger.warning("no head listens at %s; trying again until one does", address)
        stop.wait(RETRY_SECONDS[min(attempt, len(RETRY_SECONDS) - 1)])
    return False


def _spawn(node_args: tuple, node_kwargs: dict) -> Any:
    child = multiprocessing.get_context("spawn").Process(
        target=run_node_process, args=(node_args, node_kwargs), name="llmasos-node"
    )
    child.start()
    return child
