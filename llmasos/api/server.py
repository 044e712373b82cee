"""`llmasos serve`: hold the port, boot the kernel, make sure the admin app and its key exist, run uvicorn.

The port is taken first, before anything is announced or recorded: a second server started on a
busy port must fail at once with a message that says who holds it, and must never touch the
running server's `server.json` (it once replaced it and then deleted it on the way out, so clients
stopped finding the server that was still running).
"""

from __future__ import annotations

import contextlib
import copy
import dataclasses
import errno
import ipaddress
import logging
import os
import signal
import socket
import sys
import threading
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit

import httpx
import uvicorn
from uvicorn.config import LOGGING_CONFIG

from llmasos.api.app import create_app
from llmasos.api.auth import keyless_app
from llmasos.api.limits import HttpLimits
from llmasos.api.preloading import Preloading
from llmasos.api.request_rate import RequestRatePolicy
from llmasos.config import llmasos_home
from llmasos.errors import AddressInUseError
from llmasos.kernel.boot import boot
from llmasos.kernel.syscalls import Syscalls
from llmasos.sdk.discovery import read_server_file, remove_server_file, write_server_file
from llmasos.security.admin import admin_key_path, ensure_admin
from llmasos.settings import Settings

logger = logging.getLogger("llmasos.serve")

#: The access log's size before it rotates, and how many old ones are kept: at most 40 MiB in all
#: (3,000 bad-key requests once wrote a 12 MB log that only grew).
ACCESS_LOG_BYTES = 10 * 2**20
ACCESS_LOG_BACKUPS = 3


def access_log_path() -> Path:
    return llmasos_home() / "logs" / "access.log"


def logging_config(access_log: bool) -> dict[str, Any]:
    """uvicorn's logging, with its access log (when on) in a rotating file under LLMASOS_HOME
    instead of the terminal: one line per request is a flood under load, and a file that never
    rotates grows with every client's mistakes."""
    config = copy.deepcopy(LOGGING_CONFIG)
    if access_log:
        path = access_log_path()
        path.parent.mkdir(parents=True, exist_ok=True, mode=0o700)
        os.chmod(path.parent, 0o700)
        path.touch(mode=0o600, exist_ok=True)
        os.chmod(path, 0o600)
        config["handlers"]["access"] = {
            "formatter": "access",
            "class": "logging.handlers.RotatingFileHandler",
            "filename": str(path),
            "maxBytes": ACCESS_LOG_BYTES,
            "backupCount": ACCESS_LOG_BACKUPS,
            "encoding": "utf-8",
        }
        config["formatters"]["access"]["use_colors"] = False
    return config


def is_loopback(host: str) -> bool:
    if host == "localhost":
        return True
    try:
        return ipaddress.ip_address(host).is_loopback
    except ValueError:
        return False


#: Each connection's kernel send buffer (Linux doubles it; accepted sockets inherit it from the
#: listening one). Left to autotuning, a loopback connection's grew to megabytes at once (64 KiB
#: segments): a client that never read took a whole 958-token answer of the tiny model into it, so
#: the kernel's output bound (kernel/backpressure.py) never came into play. A stream needs a few KB/s.
SEND_BUFFER_BYTES = 32 * 1024


def listen_on(host: str, port: int) -> socket.socket:
    """A socket listening on host:port (handed to uvicorn), or AddressInUseError naming who holds it."""
    sock = socket.socket(socket.AF_INET6 if ":" in host else socket.AF_INET, socket.SOCK_STREAM)
    # As uvicorn does: a restarted server may reuse a port whose old connections are in TIME_WAIT.
    # (On Linux this does not let two sockets listen on one port.)
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_SNDBUF, SEND_BUFFER_BYTES)
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


@dataclasses.dataclass(frozen=True)
class ClusterOptions:
    """`serve --cluster`: start a Ray head on loopback at `port`, or join the one at `address`."""

    address: str | None = None
    port: int = 6380


def serve(
    settings: Settings | None = None, *, preload: tuple[str, ...] = (), cluster: ClusterOptions | None = None
) -> None:
    """Serve until interrupted, as `settings` say (`llmasos.settings.load_settings`), loading the
    `preload` models and those the settings mark to preload at start. Prints where, and where the
    admin key is, before it starts; `server.access_log` writes one line per request to a rotating
    file (see `logging_config`)."""
    settings = settings or Settings()
    sock = listen_on(settings.server.host, settings.server.port)
    _exit_cleanly_on_sigterm()
    try:
        _serve_on(sock, settings, (*preload, *settings.preloaded()), cluster)
    finally:
        remove_server_file()  # only if this process wrote it
        sock.close()


def _exit_cleanly_on_sigterm() -> None:
    """uvicorn shuts down gracefully on SIGTERM and then raises the signal again; with the default
    handler that kills the process before `serve` removes its server.json. Exit instead."""
    if threading.current_thread() is threading.main_thread():
        signal.signal(signal.SIGTERM, lambda signum, frame: sys.exit(128 + signum))


def _serve_on(
    sock: socket.socket, settings: Settings, preload: tuple[str, ...], cluster: ClusterOptions | None = None
) -> None:
    if cluster is None:
        return _serve_and_close(sock, settings, preload, boot(interface="http", settings=settings))
    from llmasos.cluster.loopback import use_loopback

    use_loopback(cluster.address)  # before Ray is imported
    from llmasos.cluster.registry import model_resolver
    from llmasos.cluster.runtime import cluster_loader, start_head
    from llmasos.cluster.secret import load_or_create_secret, secret_path
    from llmasos.cluster.tools import ToolPlacer
    from llmasos.library.catalog import resolve_alias
    from llmasos.library.store import ModelStore
    from llmasos.tools.devices import use_nodes
    from llmasos.tools.nodes import NODE_TOOLS

    head = start_head(load_or_create_secret(), cluster.address, port=cluster.port)
    print(f"cluster head at {head.address}; nodes join with `llmasos node start --address {head.address}` "
          f"and the secret in {secret_path()}", flush=True)  # fmt: skip
    try:  # from here on the head's Ray processes stop with the server, whatever fails
        use_nodes(ToolPlacer(head.directory, NODE_TOOLS))  # ocr, speech, embed run on capable nodes
        store = ModelStore()  # a model may be on the nodes alone: the head need not hold its file
        resolve = model_resolver(head.directory.nodes, lambda name: store.get(name).name, resolve_alias)
        syscalls = boot(
            interface="http", settings=settings, engines=cluster_loader(head.directory), resolve_model=resolve
        )
        syscalls.cluster_nodes = lambda: [node.as_dict() for node in head.directory.nodes()]
        _serve_and_close(sock, settings, preload, syscalls)
    finally:
        use_nodes(None)
        head.stop()


def _serve_and_close(
    sock: socket.socket, settings: Settings, preload: tuple[str, ...], syscalls: Syscalls
) -> None:
    """Serve until shut down, then close the kernel: its audit log, databases and engines' files are
    closed (SQLite folds each write-ahead log back into its database) before the process exits."""
    try:
        _serve_booted(sock, settings, preload, syscalls)
    finally:
        syscalls.close()


def _serve_booted(
    sock: socket.socket, settings: Settings, preload: tuple[str, ...], syscalls: Syscalls
) -> None:
    server = settings.server
    host, port, anonymous_app, access_log = server.host, server.port, server.anonymous_app, server.access_log
    allow_anonymous = server.allow_anonymous
    admin, _ = ensure_admin(syscalls.apps)
    if anonymous_app is not None:
        keyless_app(syscalls.apps, anonymous_app)  # a missing or admin app fails now, not per request
    # A name the library lacks fails now; the loads run once the server answers (preloading.py).
    preloading = Preloading(
        syscalls, admin, tuple(syscalls.allowed_model(admin, m) for m in dict.fromkeys(preload))
    )
    limits = HttpLimits(
        max_body_bytes=server.max_body_size,
        trusted_hosts=server.trusted_hosts,
        cors_origins=server.cors_origins,
        request_rate=RequestRatePolicy(server.requests_per_minute, server.request_burst),
    )
    if host not in ("0.0.0.0", "::", *limits.trusted_hosts):  # the bound name is always trusted
        limits = dataclasses.replace(limits, trusted_hosts=(*limits.trusted_hosts, host))
    app = create_app(
        syscalls,
        allow_anonymous=allow_anonymous,
        anonymous_app=anonymous_app,
        limits=limits,
        http_niceness=server.http_niceness,
    )
    app.state.preloading = preloading
    url = f"http://{host if ':' not in host else f'[{host}]'}:{port}"
    print(f"LLMasOS serving on {url} (admin key: {admin_key_path()})", flush=True)
    if not is_loopback(host):
        print(f"warning: listening on {host}, reachable from other machines; keys are required", flush=True)
    if anonymous_app is not None:
        print(f"requests without an LLMasOS key run as app {anonymous_app!r} (--anonymous-app)", flush=True)
    if limits.cors_origins:
        print(
            f"web pages from {', '.join(limits.cors_origins)} may call this server (--cors-origin)",
            flush=True,
        )
        if "*" in limits.cors_origins and (allow_anonymous or anonymous_app is not None):
            print(
                "warning: --cors-origin * with keyless requests lets any web page act as that app", flush=True
            )
    if allow_anonymous:
        print("warning: --allow-anonymous: requests without a key run as app 'anonymous'", flush=True)
    if access_log:
        print(f"access log: {access_log_path()} (rotated at {ACCESS_LOG_BYTES // 2**20} MiB)", flush=True)
    config = uvicorn.Config(
        app,
        host=host,
        port=port,
        log_level=server.log_level,
        log_config=logging_config(access_log),
        access_log=access_log,
        timeout_graceful_shutdown=5,
    )
    if access_log:  # uvicorn set every one of its loggers to `log_level`; access lines are INFO
        logging.getLogger("uvicorn.access").setLevel(logging.INFO)
    write_server_file(url if host not in ("0.0.0.0", "::") else f"http://127.0.0.1:{port}")
    preloading.start()
    uvicorn.Server(config).run(sockets=[sock])
