"""A second `llmasos serve` on a busy port fails at once, says who holds the port, and leaves the
running server's record (`server.json`) alone, so clients keep finding it. Two real servers.

The bug this pins down: the second server printed "serving on ...", failed with [Errno 98], and on
its way out deleted the first one's server.json; `llmasos ps` then said no server ran and
`llmasos.Client()` quietly fell back to an in-process kernel."""

from __future__ import annotations

import json
import os
import socket
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path

import pytest

import llmasos
from llmasos.sdk.discovery import read_server_file, remove_server_file, server_file, write_server_file
from tests.api.conftest import free_port
from tests.helpers.cli import run_cli
from tests.helpers.served import Served, environment, start_serve


@pytest.fixture
def first(llmasos_home: Path) -> Iterator[Served]:
    server = start_serve(llmasos_home, free_port())
    yield server
    server.stop()


def second_serve(home: Path, port: int) -> subprocess.CompletedProcess:
    return subprocess.run(
        [sys.executable, "-m", "llmasos.cli.main", "serve", "--port", str(port)],
        env=environment(home),
        capture_output=True,
        text=True,
        timeout=120,
    )


def test_a_second_server_on_the_same_port_fails_and_the_first_stays_found(first, monkeypatch, capsys):
    record = server_file().read_text()
    port = int(first.url.rsplit(":", 1)[1])

    second = second_serve(first.home, port)

    assert second.returncode == 1
    assert "serving on" not in second.stdout
    message = (
        f"error: port {port} is in use (by llmasos serve pid {first.process.pid}, {first.url}); use --port"
    )
    assert message in second.stderr and "Traceback" not in second.stderr
    assert server_file().read_text() == record  # not replaced, not removed
    assert first.process.poll() is None
    code, out, err = run_cli(monkeypatch, capsys, "ps", "--json")
    assert code == 0, err
    assert json.loads(out) == []
    with llmasos.Client() as client:
        assert client.mode == "http" and client.base_url == first.url


def test_a_port_held_by_another_program_is_named_so(llmasos_home):
    with socket.socket() as other:
        other.bind(("127.0.0.1", 0))
        other.listen()
        port = other.getsockname()[1]
        result = second_serve(llmasos_home, port)
    assert result.returncode == 1
    assert f"error: port {port} is in use (by another program); use --port to pick another" in result.stderr
    assert "serving on" not in result.stdout
    assert not server_file().exists()


def test_the_first_server_removes_its_own_record_when_it_stops(first):
    assert read_server_file()["pid"] == first.process.pid
    first.stop()  # SIGTERM, as `kill` and service managers send
    assert first.process.returncode == 128 + 15, first.output()
    assert not server_file().exists()


def test_a_process_removes_only_the_record_it_wrote_last():
    write_server_file("http://127.0.0.1:1")
    info = read_server_file()
    # Another server (here: a record with another token) replaced it: not this process's to remove.
    server_file().write_text(json.dumps({**info, "token": "someone-else"}))
    remove_server_file()
    assert read_server_file()["token"] == "someone-else"
    server_file().write_text(json.dumps({**info, "pid": os.getppid()}))  # another live process's
    remove_server_file()
    assert read_server_file()["pid"] == os.getppid()
    write_server_file("http://127.0.0.1:2")
    remove_server_file()
    assert not server_file().exists()
