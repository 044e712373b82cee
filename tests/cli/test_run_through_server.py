"""With `llmasos serve` running, `llmasos run` and `llmasos chat` are its clients: their processes are in
the server's process table and audit log, and the CLI process loads no model (it does not even
import the kernel, the engine or torch). All of it with real processes, as a user runs them."""

from __future__ import annotations

import re
from collections.abc import Iterator
from pathlib import Path

import httpx
import pytest

from llmasos.library import ModelStore
from llmasos.security.admin import read_admin_key
from llmasos.security.audit import AuditLog
from tests.api.conftest import free_port
from tests.helpers.served import Served, run_llmasos, start_serve

#: Modules a process that ran or loaded a model must have imported.
MODEL_MODULES = ("torch", "llmasos.kernel", "llmasos.engine", "llmasos.model")


@pytest.fixture(scope="module")
def served(tmp_path_factory: pytest.TempPathFactory, tiny_gguf: Path) -> Iterator[Served]:
    """`llmasos serve` on a home with the tiny model in its library."""
    home = tmp_path_factory.mktemp("served") / "home"
    with pytest.MonkeyPatch.context() as patch:
        patch.setenv("LLMASOS_HOME", str(home))
        ModelStore().pull(str(tiny_gguf), name="tiny", progress=False)
    server = start_serve(home, free_port())
    yield server
    server.stop()


@pytest.fixture
def home(served: Served, monkeypatch: pytest.MonkeyPatch) -> Path:
    """This test reads the served home (its audit log, its admin key) as the CLI does."""
    monkeypatch.setenv("LLMASOS_HOME", str(served.home))
    return served.home


def user(text: str) -> dict:
    return {"role": "user", "content": text}


def loaded_model_modules(modules: list[str]) -> list[str]:
    return [m for m in modules if m == "torch" or m.startswith(tuple(f"{p}." for p in MODEL_MODULES))]


def server_process(served: Served, pid: int) -> dict:
    headers = {"Authorization": f"Bearer {read_admin_key()}"}
    processes = httpx.get(served.url + "/os/ps", headers=headers, timeout=30).json()["processes"]
    (process,) = [p for p in processes if p["pid"] == pid]
    return process


def test_run_answers_through_the_server_and_loads_no_model(served, home, reference) -> None:
    result, modules = run_llmasos(
        home, "run", "-m", "tiny", "--max-tokens", "5", "--temperature", "0", "-v", "Hello"
    )
    assert result.returncode == 0, result.stderr
    assert result.stdout == reference([user("Hello")], 5)[0] + "\n"
    assert f"[answering through the server at {served.url}]" in result.stderr
    pid = int(re.search(r"; pid (\d+)\]", result.stderr)[1])

    process = server_process(served, pid)
    assert process["app"] == "admin" and process["model"] == "tiny"
    assert process["state"] == "finished" and process["tokens_out"] == 5
    (row,) = [r for r in AuditLog().query(app="admin") if r["pid"] == pid and r["outcome"] != "started"]
    assert row["call"] == "chat" and row["interface"] == "http" and row["tokens_out"] == 5

    assert loaded_model_modules(modules) == []
    assert "llmasos.sdk.transport" in modules  # the observable is real: it did run the client


def test_chat_turns_are_processes_of_the_server(served, home, reference) -> None:
    result, modules = run_llmasos(
        home, "chat", "-m", "tiny", "--max-tokens", "4", "--temperature", "0", "-v", stdin="Hello\nHi again\n"
    )
    assert result.returncode == 0, result.stderr
    first = reference([user("Hello")], 4)[0]
    second = reference([user("Hello"), {"role": "assistant", "content": first}, user("Hi again")], 4)[0]
    assert result.stdout == f">>> {first}\n>>> {second}\n>>> "
    pids = [int(p) for p in re.findall(r"; pid (\d+)\]", result.stderr)]
    assert len(pids) == 2
    for pid in pids:
        assert server_process(served, pid)["app"] == "admin"
    assert loaded_model_modules(modules) == []


def test_without_a_server_run_loads_the_model_in_its_own_process(tmp_path, tiny_gguf, monkeypatch) -> None:
    """The same observable, the other way round: with no server, the CLI process is the one that loads."""
    home = tmp_path / "alone"
    monkeypatch.setenv("LLMASOS_HOME", str(home))
    ModelStore().pull(str(tiny_gguf), name="tiny", progress=False)
    result, modules = run_llmasos(home, "run", "-m", "tiny", "--max-tokens", "2", "-v", "Hello")
    assert result.returncode == 0, result.stderr
    assert "in this process (no server runs)" in result.stderr
    assert "llmasos.model.loader" in loaded_model_modules(modules)
    (row,) = [r for r in AuditLog().query(app="admin") if r["call"] == "chat" and r["outcome"] != "started"]
    assert row["interface"] == "cli"
