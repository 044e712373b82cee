"""`llmasos top` in a pseudo-terminal against a live server: processes appear, keys sort and filter
them, and a cancel from the keyboard ends the process on the server."""

from __future__ import annotations

import os
import sys
from collections.abc import Iterator
from pathlib import Path

import pytest

from llmasos.config import EngineConfig
from llmasos.engine.sampling import SamplingParams
from llmasos.kernel.process import ProcessState
from llmasos.security.apps import App
from tests.api.conftest import LiveServer, run_server
from tests.helpers.cli import run_cli


@pytest.fixture
def server(tiny_gguf: Path) -> Iterator[LiveServer]:
    yield from run_server(tiny_gguf, "tiny", EngineConfig(block_size=4, kv_cache_bytes=2**20))


def _queued(server: LiveServer, app_name: str) -> int:
    """A process that stays queued while the test looks: the kernel's loop is paused for it."""
    app = server.syscalls.apps.create(App(app_name))
    return server.syscalls.generate(app, "tiny", "hello there", SamplingParams(max_tokens=50)).pid


def spawn_top(server: LiveServer, *args: str):
    import pexpect

    return pexpect.spawn(
        sys.executable,
        ["-m", "llmasos.cli.main", "top", "--url", server.url, "--interval", "0.3", *args],
        env={**os.environ, "TERM": "xterm", "NO_COLOR": "1", "LLMASOS_API_KEY": server.admin_key},
        encoding="utf-8",
        timeout=30,
        dimensions=(40, 160),
        # poll, not select: select() refuses descriptors past 1,023, and the whole suite's process
        # holds more than that by the time these tests run (CI failed with "filedescriptor out of range")
        use_poll=True,
    )


def test_processes_appear_and_a_cancel_from_the_keyboard_ends_one(server: LiveServer) -> None:
    import pexpect

    server.syscalls.kernel.stop()
    first, second = _queued(server, "reporter"), _queued(server, "indexer")
    child = spawn_top(server)
    child.expect_exact(str(second))
    child.expect_exact("PROCESSES")
    child.expect_exact("indexer")  # both apps' processes are listed, with the apps and models below
    child.expect_exact("APPS")
    child.send("s")  # sort by app: "indexer" comes first
    child.expect_exact("sort app asc")
    child.send("/")  # filter to the other app: the selection follows to what is shown
    child.send("report")
    child.send("\r")
    child.expect_exact("filter /report")
    child.send("c")
    child.expect_exact(f"cancel process {first}? y/n")
    child.send("y")
    child.expect_exact(f"cancelled {first}")
    child.send("q")
    child.expect(pexpect.EOF)
    child.close()
    assert child.exitstatus == 0
    table = server.syscalls.kernel.table
    assert table[first].state is ProcessState.CANCELLED
    assert table[second].state is ProcessState.QUEUED  # the filtered-out one was left alone


def test_once_prints_one_frame_and_a_refused_key_says_so(server: LiveServer, monkeypatch, capsys) -> None:
    server.syscalls.kernel.stop()
    pid = _queued(server, "batcher")
    at = ("top", "--once", "--url", server.url, "--key")
    code, out, _ = run_cli(monkeypatch, capsys, *at, server.admin_key)
    assert code == 0 and "batcher" in out and f"{pid}" in out and "queued" in out
    code, _, err = run_cli(monkeypatch, capsys, *at, "lmos-wrong")
    assert code == 1 and "refused the key" in err
