"""Every file under $LLMASOS_HOME is 0600 and every folder 0700 after a real server's work, whatever
the umask (issue 20 item 8: `files/` was 0755 and WAVs 0644)."""

from __future__ import annotations

import os
import shutil
import stat
from pathlib import Path

import pytest

from llmasos.sdk.discovery import write_server_file
from llmasos.security.admin import ADMIN_APP
from tests.helpers.cli import run_cli

CHAT = {"model": "tiny", "messages": [{"role": "user", "content": "hi"}], "max_tokens": 2}


@pytest.fixture(autouse=True)
def usual_umask():
    before = os.umask(0o022)  # the usual umask, under which a plain open() makes 0644 files
    yield
    os.umask(before)


def _modes(home: Path) -> dict[str, str]:
    modes = {".": oct(stat.S_IMODE(home.stat().st_mode))}
    for path in home.rglob("*"):
        modes[str(path.relative_to(home))] = oct(stat.S_IMODE(path.lstat().st_mode))
    return modes


def test_every_file_is_0600_and_every_folder_0700_after_a_servers_work(
    tiny_server, llmasos_home, monkeypatch, capsys
):
    write_server_file(tiny_server.url)
    admin = tiny_server.client()
    key = admin.post("/os/apps", json={"name": "worker"}).json()["api_key"]
    worker = tiny_server.client(key)
    assert worker.post("/v1/chat/completions", json=CHAT).status_code == 200
    assert worker.post("/v1/completions", json={"model": "tiny", "prompt": 5}).status_code == 422
    assert run_cli(monkeypatch, capsys, "apps", "create", "second")[0] == 0
    assert run_cli(monkeypatch, capsys, "audit", "--verify")[0] == 0

    from llmasos.tools.builtin import builtin_tools
    from llmasos.tools.registry import ToolContext, ToolRegistry

    tools = ToolRegistry(builtin_tools())
    context = ToolContext(tiny_server.syscalls.apps.get(ADMIN_APP))
    tools.call("knowledge", {"operation": "add", "subject": "a", "relation": "b", "object": "c"}, context)
    if shutil.which("espeak-ng"):  # speak returns its audio and leaves nothing under the home
        before = set(_modes(llmasos_home))
        assert tools.call("speak", {"text": "hello"}, context).output["audio_base64"]
        assert set(_modes(llmasos_home)) == before

    modes = _modes(llmasos_home)
    assert len(modes) > 10, modes  # the work above did write: databases, keys, anchor, models, files
    wrong = {
        name: mode
        for name, mode in modes.items()
        if mode != ("0o700" if (llmasos_home / name).is_dir() else "0o600")
    }
    assert wrong == {}
