"""`llmasos top`: the running server's processes, apps, models and nodes, live in the terminal, like htop.

Keys: up/down (or j/k) select a process; `c` cancels it (`y` confirms); `s` cycles the sort column and
`r` reverses it; `/` filters processes by app, model or state (Enter keeps the filter, Esc clears
it); `a` shows ended processes too; `q` quits. Everything it shows and does goes through the HTTP API
with the caller's key (the local admin's by default), so an app's key sees its own processes only.
"""

from __future__ import annotations

import contextlib
import os
import select
import sys
import termios
import time
import tty
from collections.abc import Iterator
from dataclasses import dataclass, field
from typing import Annotated

import httpx
import typer
from rich.console import Console, Group
from rich.live import Live
from rich.table import Table
from rich.text import Text

from llmasos.errors import AuthenticationError, ServerUnavailableError

#: Columns a process list can be sorted by, in the order `s` cycles through them.
SORTS = ("pid", "app", "model", "state", "priority", "tokens_out", "waited_seconds", "running_seconds")
LIVE_STATES = ("queued", "running", "suspended", "blocked")
KEYS = "↑↓ select  c cancel  s sort  r reverse  / filter  a all  q quit"


@dataclass
class Snapshot:
    """What the server said at one refresh; a part it does not offer (nodes, for one) is None."""

    processes: list[dict] = field(default_factory=list)
    apps: list[dict] | None = None
    models: list[dict] | None = None
    nodes: list[dict] | None = None
    error: str = ""


@dataclass
class View:
    """The operator's choices: what is shown, in which order, and which process is selected."""

    sort: str = "pid"
    reverse: bool = False
    filter: str = ""
    editing: bool = False  # typing a filter
    show_all: bool = False
    selected: int = 0  # the selected process's pid (0: none)
    confirming: bool = False  # `c` was pressed; `y` cancels the selected process
    message: str = ""

    def rows(self, processes: list[dict]) -> list[dict]:
        shown = [p for p in processes if self.show_all or p["state"] in LIVE_STATES]
        if self.filter:
            needle = self.filter.lower()
            shown = [p for p in shown if any(needle in str(p[k]).lower() for k in ("app", "model", "state"))]
        return sorted(shown, key=lambda p: (p[self.sort], p["pid"]), reverse=self.reverse)


class Source:
    """The server's views over HTTP, as the holder of `key`."""

    def __init__(self, url: str, key: str, timeout: float = 5.0) -> None:
        self.http = httpx.Client(base_url=url, headers={"Authorization": f"Bearer {key}"}, timeout=timeout)

    def snapshot(self) -> Snapshot:
        try:
            processes = self._get("/os/ps", "processes") or []
            return Snapshot(
                processes,
                self._get("/os/apps", "apps"),
                self._get("/os/models/loaded", "models"),
                self._get("/os/nodes", "nodes"),
            )
        except httpx.HTTPError as err:
            return Snapshot(error=f"the server does not answer ({type(err).__name__}); retrying")

    def cancel(self, pid: int) -> str:
        answer = self.http.delete(f"/os/tasks/{pid}")
        if answer.status_code >= 400:
            return f"could not cancel {pid}: {_message(answer)}"
        return f"cancelled {pid}"

    def close(self) -> None:
        self.http.close()

    def _get(self, path: str, key: str) -> list[dict] | None:
        answer = self.http.get(path)
        if answer.status_code == 401:  # not worth retrying: say so and stop
            raise AuthenticationError(f"the server refused the key: {_message(answer)}")
        if answer.status_code in (403, 404):  # not offered to this key, or not by this server
            return None
        answer.raise_for_status()
        return answer.json().get(key)


def _message(answer: httpx.Response) -> str:
    try:
        return answer.json()["error"]["message"]
    except (ValueError, KeyError, TypeError):
        return answer.text[:200]


# ---- drawing ----------------------------------------------------------------------------------


def render(snapshot: Snapshot, view: View) -> Group:
    """One frame: a status line, the processes, then apps, models and nodes."""
    rows = view.rows(snapshot.processes)
    live = sum(p["state"] in LIVE_STATES for p in snapshot.processes)
    order = "desc" if view.reverse else "asc"
    status = f"llmasos top  {live} live processes  sort {view.sort} {order}"
    if view.filter or view.editing:
        status += f"  filter /{view.filter}" + ("_" if view.editing else "")
    parts: list = [Text(status, style="bold"), Text(KEYS, style="dim")]
    if snapshot.error or view.message:
        parts.append(Text(snapshot.error or view.message, style="yellow"))
    parts.append(_process_table(rows, view))
    if snapshot.apps is not None:
        parts.append(_table("APPS", snapshot.apps, ("name", "priority", "weight", "tokens_per_minute")))
    if snapshot.models is not None:
        parts.append(_table("MODELS", snapshot.models, ("name", "memory_bytes", "active_processes")))
    if snapshot.nodes is not None:
        parts.append(_table("NODES", snapshot.nodes, ("name", "state", "address")))
    return Group(*parts)


def _process_table(rows: list[dict], view: View) -> Table:
    table = Table(box=None, pad_edge=False, title="PROCESSES", title_justify="left")
    for column in ("PID", "APP", "MODEL", "STATE", "PRIORITY", "IN", "OUT", "WAITED", "RUNNING"):
        table.add_column(column, no_wrap=True)
    for p in rows:
        style = "reverse" if p["pid"] == view.selected else None
        table.add_row(
            str(p["pid"]),
            p["app"],
            p["model"],
            p["state"],
            p["priority"],
            str(p["tokens_in"]),
            str(p["tokens_out"]),
            f"{p['waited_seconds']:.1f}s",
            f"{p['running_seconds']:.1f}s",
            style=style,
        )
    if not rows:
        table.add_row("(none)", *[""] * 8)
    return table


def _table(title: str, items: list[dict], columns: tuple[str, ...]) -> Table:
    table = Table(box=None, pad_edge=False, title=title, title_justify="left")
    for column in columns:
        table.add_column(column.upper().replace("_", " "), no_wrap=True)
    for item in items:
        table.add_row(*(str(item.get(c, "")) for c in columns))
    return table


# ---- keys -------------------------------------------------------------------------------------


def handle(key: str, view: View, rows: list[dict], source: Source) -> bool:
    """Apply one key press to the view (or the server); False when the operator quits."""
    if view.editing:
        _edit_filter(key, view)
        return True
    if view.confirming:
        view.confirming = False
        view.message = source.cancel(view.selected) if key == "y" else "not cancelled"
        return True
    pids = [p["pid"] for p in rows]
    if key == "q":
        return False
    if key in ("\x1b[A", "k", "\x1b[B", "j") and pids:
        at = pids.index(view.selected) if view.selected in pids else -1
        step = -1 if key in ("\x1b[A", "k") else 1
        view.selected = pids[max(0, min(len(pids) - 1, at + step))]
    elif key == "s":
        view.sort = SORTS[(SORTS.index(view.sort) + 1) % len(SORTS)]
    elif key == "r":
        view.reverse = not view.reverse
    elif key == "a":
        view.show_all = not view.show_all
    elif key == "/":
        view.editing, view.filter = True, ""
    elif key == "c":
        if view.selected in pids:
            view.confirming, view.message = True, f"cancel process {view.selected}? y/n"
        else:
            view.message = "select a process first (up/down)"
    return True


def _edit_filter(key: str, view: View) -> None:
    if key in ("\r", "\n"):
        view.editing = False
    elif key == "\x1b":
        view.editing, view.filter = False, ""
    elif key in ("\x7f", "\x08"):
        view.filter = view.filter[:-1]
    elif key.isprintable():
        view.filter += key


@contextlib.contextmanager
def keys_of(stream) -> Iterator[callable]:
    """A function that waits up to `timeout` s for one key press (an escape sequence whole), with the
    terminal in cbreak mode meanwhile; it returns "" when none came."""
    fd = stream.fileno()
    saved = termios.tcgetattr(fd)
    tty.setcbreak(fd)

    def read_key(timeout: float) -> str:
        ready, _, _ = select.select([fd], [], [], timeout)
        if not ready:
            return ""
        key = os.read(fd, 1).decode(errors="replace")
        if key == "\x1b" and select.select([fd], [], [], 0.05)[0]:
            key += os.read(fd, 2).decode(errors="replace")
        return key

    try:
        yield read_key
    finally:
        termios.tcsetattr(fd, termios.TCSADRAIN, saved)


# ---- the command ------------------------------------------------------------------------------


def top(
    url: Annotated[str | None, typer.Option(help="The server (default: the one running here).")] = None,
    key: Annotated[
        str | None, typer.Option(envvar="LLMASOS_API_KEY", help="An API key (default: the local admin's).")
    ] = None,
    interval: Annotated[float, typer.Option(min=0.2, max=60, help="Seconds between refreshes.")] = 1.0,
    once: Annotated[bool, typer.Option("--once", help="Print one frame and exit (no keys).")] = False,
) -> None:
    """Processes, apps, models and nodes of the running server, live, like htop; sort, filter and
    cancel with the keys shown at the top."""
    source = Source(*_server(url, key))
    try:
        if once or not sys.stdin.isatty():
            Console(highlight=False).print(render(source.snapshot(), View(show_all=True)))
            return
        _run(source, View(), interval)
    finally:
        source.close()


def _run(source: Source, view: View, interval: float) -> None:
    console = Console(highlight=False)
    snapshot = source.snapshot()
    with keys_of(sys.stdin) as read_key, Live(console=console, screen=True, auto_refresh=False) as live:
        refreshed = time.monotonic()
        while True:
            rows = view.rows(snapshot.processes)
            if rows and view.selected not in [p["pid"] for p in rows]:  # gone, or filtered out
                view.selected = rows[0]["pid"]
            live.update(render(snapshot, view), refresh=True)
            key = read_key(max(0.0, refreshed + interval - time.monotonic()))
            if key and not handle(key, view, rows, source):
                return
            if key in ("y", "n") or time.monotonic() >= refreshed + interval:
                snapshot, refreshed = source.snapshot(), time.monotonic()


def _server(url: str | None, key: str | None) -> tuple[str, str]:
    from llmasos.sdk.discovery import read_server_file
    from llmasos.security.admin import read_admin_key

    info = read_server_file()
    url = url or (info or {}).get("url")
    key = key or read_admin_key()
    if not url or not key:
        raise ServerUnavailableError(
            "no server is running here: start one with `llmasos serve`, or give --url and --key"
        )
    return url.rstrip("/"), key
