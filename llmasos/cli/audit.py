"""`llmasos audit`: the audit trail under `$LLMASOS_HOME`, newest first."""

from __future__ import annotations

import json
import time
from typing import Annotated

import typer
from rich.console import Console
from rich.table import Table

from llmasos.security.audit import OUTCOMES, AuditLog


def audit(
    app_: Annotated[str | None, typer.Option("--app", help="Only this app's calls.")] = None,
    outcome: Annotated[str | None, typer.Option(help=f"Only this outcome: {', '.join(OUTCOMES)}.")] = None,
    denied: Annotated[bool, typer.Option("--denied", help="Only calls that were not allowed.")] = False,
    since: Annotated[float | None, typer.Option(help="Only the last N minutes.")] = None,
    limit: Annotated[int, typer.Option(min=1, help="At most this many rows.")] = 50,
    verify: Annotated[
        bool, typer.Option("--verify", help="Check the hash chain and say if any row changed.")
    ] = False,
    json_: Annotated[bool, typer.Option("--json", help="Print JSON to stdout instead of a table.")] = False,
) -> None:
    """Who called what, allowed or denied and why, tokens and outcome."""
    if outcome is not None and outcome not in OUTCOMES:
        raise typer.BadParameter(f"use one of {', '.join(OUTCOMES)}", param_hint="--outcome")
    log = AuditLog()
    if verify:
        broken = log.verify()
        if broken is not None:
            typer.secho(f"the audit log was altered: the chain breaks at row {broken}", err=True, fg="red")
            raise typer.Exit(1)
        typer.echo("the audit log is intact", err=True)
    rows = log.query(
        app=app_,
        outcome=outcome,
        allowed=False if denied else None,
        since=time.time() - since * 60 if since is not None else None,
        limit=limit,
    )
    if json_:
        typer.echo(json.dumps(rows, indent=2))
        return
    table = Table("id", "time", "app", "call", "target", "outcome", "tokens in/out", "reason")
    for r in rows:
        table.add_row(
            str(r["id"]),
            time.strftime("%Y-%m-%d %H:%M:%S", time.localtime(r["ts"])),
            r["app"],
            r["call"],
            r["target"],
            r["outcome"],
            f"{r['tokens_in']}/{r['tokens_out']}",
            r["reason"],
        )
    Console(highlight=False).print(table)
