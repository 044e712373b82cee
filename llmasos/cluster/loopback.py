"""Keeping Ray on loopback on Linux.

Ray binds its services to the address it finds for this machine (the one a UDP socket to the internet
would use), and rewrites `127.0.0.1` in an address it is given to that one too, unless the variable below
is off; it is meant for macOS and Windows but works the same here. It is read once, when Ray is first
imported, so `use_loopback` must run before that. (`ray start --address` refuses to run with it, which
is why `node start` starts its Ray processes itself: `runtime.start_ray_node`.)
"""

from __future__ import annotations

import logging
import os
import sys

VARIABLE = "RAY_ENABLE_WINDOWS_OR_OSX_CLUSTER"
LOOPBACK_HOSTS = ("127.0.0.1", "localhost")

logger = logging.getLogger(__name__)


def is_loopback(address: str | None) -> bool:
    """Whether `address` (HOST or HOST:PORT; None: a head this process starts) is on loopback."""
    return address is None or address.rsplit(":", 1)[0] in LOOPBACK_HOSTS


def use_loopback(address: str | None) -> None:
    """Before Ray is imported: keep this process's Ray on loopback if `address` is."""
    if not is_loopback(address):
        return
    if "ray" in sys.modules and os.environ.get(VARIABLE) != "0":
        logger.warning("Ray was imported before use_loopback: it may bind to this machine's routable address")
    os.environ[VARIABLE] = "0"
