"""How local clients find the running server: `$LLMASOS_HOME/server.json`, written by `llmasos serve`
while it runs (mode 0600), holding its URL, process id and a token that tells its writer's own file
from one a later server wrote."""

from __future__ import annotations

import json
import os
import secrets
from pathlib import Path

from llmasos.config import llmasos_home
from llmasos.storage.files import private_dir, write_private


def server_file() -> Path:
    return llmasos_home() / "server.json"


#: The token this process put in the server file it wrote last; only that file is this process's to remove.
_written_token: str | None = None


def write_server_file(url: str) -> None:
    """Record this process as the local server (after it holds its port, so a second server that
    cannot serve never replaces a running one's record)."""
    global _written_token
    token = secrets.token_hex(8)
    private_dir(server_file().parent)
    write_private(server_file(), json.dumps({"url": url, "pid": os.getpid(), "token": token}))
    _written_token = token


def remove_server_file() -> None:
    """Remove the file if this process wrote it: same pid and token. Another server may have replaced
    it, or this process (tests run several servers in one) may have written a later one."""
    global _written_token
    info = read_server_file()
    if info is not None and info.get("pid") == os.getpid() and info.get("token") == _written_token:
        server_file().unlink(missing_ok=True)
        _written_token = None


def read_server_file() -> dict | None:
    """{"url", "pid", "token"} of the local server, or None if none is recorded or its process is gone."""
    try:
        info = json.loads(server_file().read_text())
        pid = int(info["pid"])
        str(info["url"])
    except (FileNotFoundError, ValueError, KeyError, TypeError):
        return None
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return None
    except PermissionError:
        pass  # alive, owned by another user
    return info
