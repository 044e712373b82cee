"""A client that stops reading its stream stops costing the engine: over a real uvicorn on loopback, a
raw socket with a small receive buffer asks for a long stream and reads nothing; its process waits for
its reader (blocked, computed far short of its 4,000 tokens), another app's stream completes
meanwhile, and closing the connection ends it.

What is not asserted: a ceiling on what it computes over seconds. On loopback the client's kernel
keeps taking data into its receive queue a little at a time (in some runs 737-900 tokens, in others
the whole 4,000 over 5-7 s, with the process blocking and resuming), so that figure is the OS's, not
the server's; the server's own buffers are bounded (the kernel's output bound, uvicorn's 64 KiB write
buffer, `listen_on`'s 32 KiB send buffer)."""

from __future__ import annotations

import json
import socket
import time
from collections.abc import Iterator
from pathlib import Path

import pytest

from llmasos.api.app import create_app
from llmasos.api.server import listen_on
from llmasos.config import EngineConfig
from llmasos.kernel.backpressure import OutputLimits
from llmasos.kernel.boot import boot
from llmasos.kernel.kernel import KernelConfig
from llmasos.library.store import ModelStore
from llmasos.security.admin import ensure_admin
from tests.api.conftest import LiveServer, serving
from tests.helpers.tiny_tokenizer import tiny_vocab

LONG = 4000  # tokens the never-reading client asks for: more than every buffer on the way holds


@pytest.fixture
def bounded_server(tmp_path: Path) -> Iterator[LiveServer]:
    """The tiny model with a 4096-token window and a 16-token output bound, served on a socket from
    `listen_on`, as `llmasos serve` serves (its send buffer capped)."""
    from tests.helpers.tiny_model import TinySpec, write_tiny_gguf

    path, _ = write_tiny_gguf(tmp_path / "tiny-4k.gguf", TinySpec(context=4096))
    ModelStore().pull(str(path), name="tiny", progress=False)
    engine = EngineConfig(block_size=16, kv_cache_bytes=8 * 2**20)
    config = KernelConfig(engine=engine, output=OutputLimits(16, 60.0))
    syscalls = boot(config, memory_budget=4 * 2**30, interface="http")
    _, key = ensure_admin(syscalls.apps)
    sock = listen_on("127.0.0.1", 0)
    try:
        with serving(create_app(syscalls), sock) as url:
            yield LiveServer(url, key, syscalls, "tiny")
    finally:
        sock.close()
        syscalls.close()


def never_reading(url: str, key: str, body: dict) -> socket.socket:
    """Send a streamed chat on a socket with a small receive buffer, and read nothing of the answer."""
    payload = json.dumps(body).encode()
    host, port = url.removeprefix("http://").split(":")
    sock = socket.socket()
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 4096)  # before connecting: the window it offers
    sock.connect((host, int(port)))
    sock.sendall(
        f"POST /v1/chat/completions HTTP/1.1\r\nHost: {host}\r\nAuthorization: Bearer {key}\r\n"
        f"Content-Type: application/json\r\nContent-Length: {len(payload)}\r\n\r\n".encode()
        + payload
    )
    return sock


def blocked_work(kernel, app: str, timeout: float = 30.0):
    """`app`'s process and its `Work` once it has waited for its reader (or ended), with the most
    output it held undelivered at any look meanwhile (sampled every few milliseconds)."""
    deadline = time.monotonic() + timeout
    work, most_undelivered = None, 0
    while time.monotonic() < deadline:
        process = next((p for p in list(kernel.table.values()) if p.app == app), None)
        if process is not None and work is None:
            work = kernel.work.get(process.pid)
        if work is not None:
            most_undelivered = max(most_undelivered, work.undelivered)
            if work.times_blocked or process.is_terminal:
                return process, work, most_undelivered
        time.sleep(0.002)
    raise AssertionError(f"{app}'s process neither waited for its reader nor ended in {timeout} s")


def test_a_client_that_stops_reading_stops_being_computed(bounded_server: LiveServer) -> None:
    kernel = bounded_server.syscalls.kernel
    idle_key, calm_key = bounded_server.new_app("idle"), bounded_server.new_app("calm")
    body = {
        "model": "tiny",
        "messages": [{"role": "user", "content": "a long story"}],
        "max_tokens": LONG,
        # Always "a": no end-of-text, so it asks for all of them, and every token is text to send (the
        # tiny model's random bytes are mostly incomplete UTF-8, held back until the end).
        "logit_bias": {str(tiny_vocab()[0].index("a")): 100},
        "stream": True,
    }
    bound = kernel.config.output.buffer_tokens
    sock = never_reading(bounded_server.url, idle_key, body)
    try:
        stalled, work, most_undelivered = blocked_work(kernel, "idle")
        # The transport took what its buffers hold, then `send` waited and the process waited for its
        # reader. (How much the client's kernel takes later, a few KB at a time, is the OS's doing.)
        assert work.times_blocked >= 1, (stalled, work.tokens_emitted)
        assert most_undelivered < bound + 16, most_undelivered  # the bound, plus at most a step's tokens
        assert stalled.tokens_out < LONG // 2, (
            f"{stalled.tokens_out} tokens computed for a client that reads nothing"
        )
        print(f"\ncomputed for the never-reading client when it first waited: {stalled.tokens_out} of {LONG}")

        with bounded_server.client(calm_key) as client:  # another app's stream goes on meanwhile
            calm = {**body, "max_tokens": 200}
            with client.stream("POST", "/v1/chat/completions", json=calm) as reply:
                lines = [line for line in reply.iter_lines() if line.startswith("data: ")]
        assert lines[-1] == "data: [DONE]"
        assert json.loads(lines[-2].removeprefix("data: "))["choices"][0]["finish_reason"] == "length"
    finally:
        sock.close()
    deadline = time.monotonic() + 10  # its client gone, the process ends and its KV is returned
    while not stalled.is_terminal and time.monotonic() < deadline:
        time.sleep(0.05)
    assert stalled.is_terminal
