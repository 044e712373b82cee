"""How local clients find the running server: `$LLMASOS_HOME/server.json`, written by `llmasos serve`
while it runs (mode 0600), holding its URL and process id."""

from __future__ import annotations

import json
import os
from pathlib import Path

from llmasos.config import llmasos_home
from llmasos.storage.files import write_private


def server_file() -> Path:
    return llmasos_home() / "server.json"


def write_server_file(url: str) -> None:
    write_private(server_file(), json.dumps({"url": url, "pid": os.getpid()}))


def remove_server_file() -> None:
    """Remove the file if this process wrote it (another server may have replaced it)."""
    info = read_server_file()
    if info is not None and info.get("pid") == os.getpid():
        server_file().unlink(missing_ok=True)


def read_server_file() -> dict | None:
    """{"url", "pid"} of the local server, or None if none is recorded or its process is gone."""
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
