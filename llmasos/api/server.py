"""`llmasos serve`: boot the kernel, make sure the admin app and its key exist, run uvicorn."""

from __future__ import annotations

import copy
import dataclasses
import ipaddress
import logging
import os
from pathlib import Path
from typing import Any

import uvicorn
from uvicorn.config import LOGGING_CONFIG

from llmasos.api.app import create_app
from llmasos.api.limits import HttpLimits
from llmasos.config import llmasos_home
from llmasos.kernel.boot import boot
from llmasos.sdk.discovery import remove_server_file, write_server_file
from llmasos.security.admin import admin_key_path, ensure_admin

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


def serve(
    host: str = "127.0.0.1",
    port: int = 8080,
    *,
    memory_budget: int | None = None,
    allow_anonymous: bool = False,
    preload: tuple[str, ...] = (),
    log_level: str = "info",
    access_log: bool = False,
    limits: HttpLimits | None = None,
) -> None:
    """Serve until interrupted. Prints where, and where the admin key is, before it starts.
    `access_log` writes one line per request to a rotating file (see `logging_config`)."""
    syscalls = boot(memory_budget=memory_budget, interface="http")
    ensure_admin(syscalls.apps)
    for model in preload:
        with syscalls.kernel.lock:
            syscalls.kernel.residency.acquire(syscalls.resolve_model(model))
    limits = limits or HttpLimits()
    if host not in ("0.0.0.0", "::", *limits.trusted_hosts):  # the bound name is always trusted
        limits = dataclasses.replace(limits, trusted_hosts=(*limits.trusted_hosts, host))
    app = create_app(syscalls, allow_anonymous=allow_anonymous, limits=limits)
    url = f"http://{host if ':' not in host else f'[{host}]'}:{port}"
    print(f"LLMasOS serving on {url} (admin key: {admin_key_path()})", flush=True)
    if not is_loopback(host):
        print(f"warning: listening on {host}, reachable from other machines; keys are required", flush=True)
    if allow_anonymous:
        print("warning: --allow-anonymous: requests without a key run as app 'anonymous'", flush=True)
    if access_log:
        print(f"access log: {access_log_path()} (rotated at {ACCESS_LOG_BYTES // 2**20} MiB)", flush=True)
    config = uvicorn.Config(
        app,
        host=host,
        port=port,
        log_level=log_level,
        log_config=logging_config(access_log),
        access_log=access_log,
        timeout_graceful_shutdown=5,
    )
    if access_log:  # uvicorn set every one of its loggers to `log_level`; access lines are INFO
        logging.getLogger("uvicorn.access").setLevel(logging.INFO)
    server = uvicorn.Server(config)
    write_server_file(url if host not in ("0.0.0.0", "::") else f"http://127.0.0.1:{port}")
    try:
        server.run()
    finally:
        remove_server_file()
