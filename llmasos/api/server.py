"""`llmasos serve`: boot the kernel, make sure the admin app and its key exist, run uvicorn."""

from __future__ import annotations

import ipaddress
import logging

import uvicorn

from llmasos.api.app import create_app
from llmasos.kernel.boot import boot
from llmasos.sdk.discovery import remove_server_file, write_server_file
from llmasos.security.admin import admin_key_path, ensure_admin

logger = logging.getLogger("llmasos.serve")


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
) -> None:
    """Serve until interrupted. Prints where, and where the admin key is, before it starts."""
    syscalls = boot(memory_budget=memory_budget, interface="http")
    admin, _ = ensure_admin(syscalls.apps)
    for model in preload:
        syscalls.preload(admin, model, keep=True)
    app = create_app(syscalls, allow_anonymous=allow_anonymous)
    url = f"http://{host if ':' not in host else f'[{host}]'}:{port}"
    print(f"LLMasOS serving on {url} (admin key: {admin_key_path()})", flush=True)
    if not is_loopback(host):
        print(f"warning: listening on {host}, reachable from other machines; keys are required", flush=True)
    if allow_anonymous:
        print("warning: --allow-anonymous: requests without a key run as app 'anonymous'", flush=True)
    config = uvicorn.Config(app, host=host, port=port, log_level=log_level, timeout_graceful_shutdown=5)
    server = uvicorn.Server(config)
    write_server_file(url if host not in ("0.0.0.0", "::") else f"http://127.0.0.1:{port}")
    try:
        server.run()
    finally:
        remove_server_file()
