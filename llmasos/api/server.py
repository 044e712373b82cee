"""`llmasos serve`: hold the port, boot the kernel, make sure the admin app and its key exist, run uvicorn.

The port is taken first, before anything is announced or recorded: a second server started on a
busy port must fail at once with a message that says who holds it, and must never touch the
running server's `server.json` (it once replaced it and then deleted it on the way out, so clients
stopped finding the server that was still running).
"""

from __future__ import annotations

import contextlib
import errno
import ipaddress
import logging
import signal
import socket
import sys
import threading
from urllib.parse import urlsplit

import httpx
import uvicorn

from llmasos.api.app import create_app
from llmasos.api.auth import keyless_app
from llmasos.errors import AddressInUseError
from llmasos.kernel.boot import boot
from llmasos.sdk.discovery import read_server_file, remove_server_file, write_server_file
from llmasos.security.admin import admin_key_path, ensure_admin

logger = logging.getLogger("llmasos.serve")


def is_loopback(host: str) -> bool:
    if host == "localhost":
        return True
    try:
        return ipaddress.ip_address(host).is_loopback
    except ValueError:
        return False


def listen_on(host: str, port: int) -> socket.socket:
    """A socket listening on host:port (handed to uvicorn), or AddressInUseError naming who holds it."""
    sock = socket.socket(socket.AF_INET6 if ":" in host else socket.AF_INET, socket.SOCK_STREAM)
    # As uvicorn does: a restarted server may reuse a port whose old connections are in TIME_WAIT.
    # (On Linux this does not let two sockets listen on one port.)
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    try:
        sock.bind((host, port))
        sock.listen(2048)  # at once: until a socket listens, another could bind the same port
    except OSError as err:
        sock.close()
        if err.errno == errno.EADDRINUSE:
            raise AddressInUseError(
                f"port {port} is in use {_holder(port)}; use --port to pick another"
            ) from None
        raise
    sock.set_inheritable(True)
    return sock


def _holder(port: int) -> str:
    """Who holds `port`: the llmasos serve recorded under $LLMASOS_HOME, or someone else."""
    info = read_server_file()
    if info is not None and urlsplit(info["url"]).port == port:
        return f"(by llmasos serve pid {info['pid']}, {info['url']})"
    with contextlib.suppress(httpx.HTTPError, ValueError):
        health = httpx.get(f"http://127.0.0.1:{port}/healthz", timeout=1.0).json()
        if isinstance(health, dict) and "resident_models" in health:
            return "(by an llmasos serve of another LLMASOS_HOME)"
    return "(by another program)"


def serve(
    host: str = "127.0.0.1",
    port: int = 8080,
    *,
    memory_budget: int | None = None,
    allow_anonymous: bool = False,
    anonymous_app: str | None = None,
    preload: tuple[str, ...] = (),
    log_level: str = "info",
) -> None:
    """Serve until interrupted. Prints where, and where the admin key is, before it starts."""
    sock = listen_on(host, port)
    _exit_cleanly_on_sigterm()
    try:
        _serve_on(sock, host, port, memory_budget, allow_anonymous, anonymous_app, preload, log_level)
    finally:
        remove_server_file()  # only if this process wrote it
        sock.close()


def _exit_cleanly_on_sigterm() -> None:
    """uvicorn shuts down gracefully on SIGTERM and then raises the signal again; with the default
    handler that kills the process before `serve` removes its server.json. Exit instead."""
    if threading.current_thread() is threading.main_thread():
        signal.signal(signal.SIGTERM, lambda signum, frame: sys.exit(128 + signum))


def _serve_on(
    sock: socket.socket,
    host: str,
    port: int,
    memory_budget: int | None,
    allow_anonymous: bool,
    anonymous_app: str | None,
    preload: tuple[str, ...],
    log_level: str,
) -> None:
    syscalls = boot(memory_budget=memory_budget, interface="http")
    admin, _ = ensure_admin(syscalls.apps)
    if anonymous_app is not None:
        keyless_app(syscalls.apps, anonymous_app)  # a missing or admin app fails now, not per request
    for model in preload:
        syscalls.preload(admin, model, keep=True)
    app = create_app(syscalls, allow_anonymous=allow_anonymous, anonymous_app=anonymous_app)
    url = f"http://{host if ':' not in host else f'[{host}]'}:{port}"
    print(f"LLMasOS serving on {url} (admin key: {admin_key_path()})", flush=True)
    if not is_loopback(host):
        print(f"warning: listening on {host}, reachable from other machines; keys are required", flush=True)
    if anonymous_app is not None:
        print(f"requests without an LLMasOS key run as app {anonymous_app!r} (--anonymous-app)", flush=True)
    if allow_anonymous:
        print("warning: --allow-anonymous: requests without a key run as app 'anonymous'", flush=True)
    config = uvicorn.Config(app, host=host, port=port, log_level=log_level, timeout_graceful_shutdown=5)
    write_server_file(url if host not in ("0.0.0.0", "::") else f"http://127.0.0.1:{port}")
    uvicorn.Server(config).run(sockets=[sock])
