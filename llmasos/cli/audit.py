"""`llmasos audit`: the audit trail under `$LLMASOS_HOME`, newest first, read through the system calls
as the local admin (so reading it is itself audited)."""

from __future__ import annotations

import json
import time
from typing import Annotated

import typer
from rich.console import Console
from rich.table import Table

from llmasos.cli.dates import local_time
from llmasos.cli.local import admin_syscalls
from llmasos.security.audit import OUTCOMES, AuditReport


def audit(
    app_: Annotated[str | None, typer.Option("--app", help="Only this app's calls.")] = None,
    outcome: Annotated[str | None, typer.Option(help=f"Only this outcome: {', '.join(OUTCOMES)}.")] = None,
    denied: Annotated[bool, typer.Option("--denied", help="Only calls that were not allowed.")] = False,
    unfinished: Annotated[
        bool, typer.Option("--unfinished", help="Only generations that started and never ended.")
    ] = False,
    since: Annotated[float | None, typer.Option(help="Only the last N minutes.")] = None,
    limit: Annotated[int, typer.Option(min=1, help="At most this many rows.")] = 50,
    verify: Annotated[
        bool,
        typer.Option("--verify", help="Check every row's seal, the chain and its anchor; say what is wrong."),
    ] = False,
    json_: Annotated[bool, typer.Option("--json", help="Print JSON to stdout instead of a table.")] = False,
) -> None:
    """Who called what, allowed or denied and why, tokens and outcome."""
    if outcome is not None and outcome not in OUTCOMES:
        raise typer.BadParameter(f"use one of {', '.join(OUTCOMES)}", param_hint="--outcome")
    with admin_syscalls() as (syscalls, admin):
        # Verified before anything else is written: the check sees the files as they were.
        report = syscalls.verify_audit(admin) if verify else None
        rows = syscalls.query_audit(
            admin,
            app=app_,
            outcome="started" if unfinished else outcome,
            allowed=False if denied else None,
            since=time.time() - since * 60 if since is not None else None,
            limit=limit,
        )
    if unfinished:
        rows = [r for r in rows if r["unfinished"]]
    if report is not None:
        _print_report(report)
    if json_:
        typer.echo(json.dumps(rows, indent=2))
    else:
        _print_rows(rows)
    if report is not None and not report.intact:
        raise typer.Exit(1)


def _print_report(report: AuditReport) -> None:
    if report.intact:
        typer.echo(f"the audit log is intact ({report.rows} rows)", err=True)
    else:
        typer.secho(f"the audit log was altered ({len(report.problems)} problems):", err=True, fg="red")
        for problem in report.problems:
            typer.secho(f"  {problem}", err=True, fg="red")
    for note in report.notes:
        typer.echo(f"note: {note}", err=True)
    if report.unfinished:
        pids = ", ".join(str(u["pid"]) for u in report.unfinished[:10])
        typer.echo(
            f"unfinished: {len(report.unfinished)} generations started and never ended (pids {pids}): "
            "still running, or the server stopped without ending them; `--unfinished` lists them",
            err=True,
        )


def _print_rows(rows: list[dict]) -> None:
    # The row's identity (id, time, app, outcome) is never wrapped; the rest folds in a narrow terminal.
    table = Table(box=None, pad_edge=False, collapse_padding=True)
    for column in ("ID", "TIME", "APP"):
        table.add_column(column, no_wrap=True)
    table.add_column("CALL", overflow="fold")
    table.add_column("TARGET", overflow="fold")
    table.add_column("OUTCOME", no_wrap=True)
    table.add_column("IN/OUT", justify="right", overflow="fold")
    table.add_column("REASON", overflow="fold")
    for r in rows:
        table.add_row(
            str(r["id"]),
            local_time(r["ts"], seconds=True),  # the order of events matters here: to the second
            r["app"],
            r["call"],
            r["target"],
            "started (unfinished)" if r["unfinished"] else r["outcome"],
            f"{r['tokens_in']}/{r['tokens_out']}",
            r["reason"],
        )
    Console(highlight=False).print(table)
