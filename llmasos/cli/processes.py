"""`llmasos ps`: the processes of the running server."""

from __future__ import annotations

import json
from typing import Annotated

import typer
from rich.console import Console
from rich.table import Table


def ps(
    all_: Annotated[bool, typer.Option("--all", "-a", help="Include ended processes.")] = False,
    json_: Annotated[bool, typer.Option("--json", help="Print JSON to stdout instead of a table.")] = False,
) -> None:
    """Processes: app, model, state, priority, tokens in/out, waited and running time, reason."""
    from llmasos.sdk.client import Client

    with Client(local=False) as client:
        processes = client.ps()
    if not all_:
        processes = [p for p in processes if p["state"] in ("queued", "running", "suspended")]
    if json_:
        typer.echo(json.dumps(processes, indent=2))
        return
    table = Table("pid", "app", "model", "state", "priority", "in", "out", "waited", "running", "reason")
    for p in processes:
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
            p["reason"] or "",
        )
    Console(highlight=False).print(table)
    if not processes:
        typer.echo("no live processes" + ("" if all_ else " (--all shows ended ones)"), err=True)
