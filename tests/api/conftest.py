"""A real uvicorn server on a free loopback port, over a kernel on the tiny model (or the real one)."""

from __future__ import annotations

import socket
import threading
import time
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path

import httpx
import pytest

from llmasos.config import EngineConfig
from llmasos.kernel.boot import boot
from llmasos.kernel.kernel import KernelConfig
from llmasos.kernel.syscalls import Syscalls
from llmasos.library.store import ModelStore
from llmasos.security.admin import ensure_admin
from llmasos.security.apps import App


@dataclass
class LiveServer:
    url: str
    admin_key: str
    syscalls: Syscalls
    model: str

    def client(self, key: str | None = None) -> httpx.Client:
        key = self.admin_key if key is None else key
        headers = {"Authorization": f"Bearer {key}"} if key else {}
        return httpx.Client(base_url=self.url, headers=headers, timeout=60)

    def new_app(self, name: str, **fields) -> str:
        """Register an app directly in the registry; returns its key."""
        self.syscalls.apps.create(App(name, **fields))
        return self.syscalls.apps.issue_key(name)

    def engine(self):
        return self.syscalls.kernel.residency.models[self.model].engine


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


@contextmanager
def serving(app, sock: socket.socket | None = None, join_seconds: float = 30) -> Iterator[str]:
    """`app` served by uvicorn in a thread, on `sock` (as `llmasos serve` listens) or a free loopback
    port, until the block ends; yields its base URL."""
    import uvicorn

    if sock is None:
        port = free_port()
        config, run = uvicorn.Config(app, host="127.0.0.1", port=port, log_level="warning"), {}
    else:
        port = sock.getsockname()[1]
        config, run = uvicorn.Config(app, log_level="warning"), {"sockets": [sock]}
    server = uvicorn.Server(config)
    thread = threading.Thread(target=server.run, kwargs=run, daemon=True)
    thread.start()
    deadline = time.monotonic() + 30
    while not server.started:
        if time.monotonic() > deadline or not thread.is_alive():
            raise RuntimeError("the test server did not start")
        time.sleep(0.02)
    try:
        yield f"http://127.0.0.1:{port}"
    finally:
        server.should_exit = True
        thread.join(timeout=join_seconds)


def run_server(
    model_path: Path,
    name: str,
    engine: EngineConfig,
    allow_anonymous: bool = False,
    memory_budget: int = 4 * 2**30,
    anonymous_app: str | None = None,
    limits=None,  # llmasos.api.limits.HttpLimits; the server's defaults when None
    **kernel,
) -> Iterator[LiveServer]:
    from llmasos.api.app import create_app

    ModelStore().pull(str(model_path), name=name, progress=False)
    syscalls = boot(KernelConfig(engine=engine, **kernel), memory_budget=memory_budget, interface="http")
    _, key = ensure_admin(syscalls.apps)
    app = create_app(syscalls, allow_anonymous=allow_anonymous, anonymous_app=anonymous_app, limits=limits)
    try:
        with serving(app) as url:
            yield LiveServer(url, key, syscalls, name)
    finally:
        syscalls.close()  # its audit log, databases and engine: a suite boots hundreds of kernels


@pytest.fixture
def tiny_server(tiny_gguf: Path) -> Iterator[LiveServer]:
    """A server on the tiny random model, named `tiny`, with a small KV pool."""
    yield from run_server(tiny_gguf, "tiny", EngineConfig(block_size=4, kv_cache_bytes=2**20))


@pytest.fixture
def anonymous_server(tiny_gguf: Path) -> Iterator[LiveServer]:
    yield from run_server(
        tiny_gguf, "tiny", EngineConfig(block_size=4, kv_cache_bytes=2**20), allow_anonymous=True
    )


@pytest.fixture
def long_tiny_server(tmp_path: Path) -> Iterator[LiveServer]:
    """The tiny model with a 1024-token window, for prompts longer than the default tiny one's 256."""
    from tests.helpers.tiny_model import TinySpec, write_tiny_gguf

    path, _ = write_tiny_gguf(tmp_path / "tiny-1k.gguf", TinySpec(context=1024))
    yield from run_server(path, "tiny", EngineConfig(block_size=16, kv_cache_bytes=4 * 2**20))
