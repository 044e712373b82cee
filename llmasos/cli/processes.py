"""`llmasos ps`: the processes of the running server."""

from __future__ import annotations

import json
from typing import Annotated

import typer
from rich.console import Console
from rich.table import Table

from llmasos.errors import ServerUnavailableError


def ps(
    all_: Annotated[bool, typer.Option("--all", "-a", help="Include ended processes.")] = False,
    json_: Annotated[bool, typer.Option("--json", help="Print JSON to stdout instead of a table.")] = False,
    models_: Annotated[
        bool, typer.Option("--models", "-m", help="Only the loaded models (memory, keep-alive, expiry).")
    ] = False,
) -> None:
    """Processes: app, model, state, priority, tokens in/out, waited and running time, reason; then the
    loaded models (memory, expiry). `--models [--json]`: only the loaded models, as `GET
    /os/models/loaded` gives them."""
    from llmasos.sdk.client import Client

    with Client(local=False) as client:
        processes = client.ps()
    loaded = loaded_models()
    if models_:
        if loaded is None:
            raise ServerUnavailableError("the loaded models are shown to the admin of a local server only")
        if json_:
            typer.echo(json.dumps(loaded, indent=2))
        else:
            Console(highlight=False).print(loaded_table(loaded["models"]))
        return
    if not all_:
        processes = [p for p in processes if p["state"] in ("queued", "running", "suspended", "blocked")]
    if json_:
        typer.echo(json.dumps(processes, indent=2))
        return
    console = Console(highlight=False)
    console.print(process_table(processes))
    for p in processes:
        if p["reason"]:  # below the table, where a long reason wraps as text and squeezes no column
            console.print(f"{p['pid']} {p['state']}: {p['reason']}", soft_wrap=False)
    if loaded is not None:  # after the processes, so what scripts read first stays where it was
        console.print()
        console.print(loaded_table(loaded["models"]))
    if not processes:
        typer.echo("no live processes" + ("" if all_ else " (--all shows ended ones)"), err=True)


def process_table(processes: list[dict]) -> Table:
    """The table `ps` prints, one line a process. What a user reads a row by (pid, app, model, state,
    priority) is never cut or wrapped, at 80 columns too; the numbers fold first when the terminal is
    narrower. A process's reason (why it failed or was cancelled) follows the table."""
    table = Table(box=None, pad_edge=False, collapse_padding=True)
    for column in ("PID", "APP", "MODEL", "STATE", "PRIORITY"):
        cells = [str(p[column.lower()]) for p in processes]
        table.add_column(column, no_wrap=True, min_width=max(map(len, [column, *cells])))
    on_nodes = any(p.get("node") for p in processes)  # a cluster (`serve --cluster`): where each runs
    if on_nodes:
        table.add_column("NODE", no_wrap=True)
    for column in ("IN", "OUT", "WAITED", "RUNNING"):
        table.add_column(column, justify="right", overflow="fold")
    for p in processes:
        table.add_row(
            str(p["pid"]),
            p["app"],
            p["model"],
            p["state"],
            p["priority"],
            *([p.get("node", "")] if on_nodes else []),
            str(p["tokens_in"]),
            str(p["tokens_out"]),
            f"{p['waited_seconds']:.1f}s",
            f"{p['running_seconds']:.1f}s",
        )
    return table


def loaded_models() -> dict | None:
    """The running server's loaded models and memory (`GET /os/models/loaded`), as the admin app;
    None when the admin key is not this user's (a remote server) or no server answers."""
    from llmasos.cli.local import request_on_server

    return request_on_server("GET", "/os/models/loaded")


def loaded_table(models: list[dict]) -> Table:
    """One line a loaded model: its name, memory, live processes and when it goes if left idle."""
    from llmasos.cli.models import expiry_text, human_bytes

    table = Table(box=None, pad_edge=False, collapse_padding=True)
    table.add_column("MODEL", no_wrap=True)
    table.add_column("MEMORY", justify="right", no_wrap=True)
    table.add_column("PROCESSES", justify="right")
    table.add_column("UNTIL", overflow="fold")
    for m in models:
        table.add_row(m["name"], human_bytes(m["memory_bytes"]), str(m["active_processes"]), expiry_text(m))
    if not models:
        table.add_row("(no model loaded)", "", "", "")
    return table
