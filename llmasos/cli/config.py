"""`llmasos config show`: the settings in force (config.toml, `LLMASOS_*` variables, defaults) and where
each came from. Flags are `llmasos serve`'s own and apply to that command only."""

from __future__ import annotations

import json
from typing import Annotated

import typer
from rich.console import Console
from rich.table import Table

app = typer.Typer(help="The settings: $LLMASOS_HOME/config.toml, LLMASOS_* variables.", no_args_is_help=True)


@app.command()
def show(
    json_: Annotated[bool, typer.Option("--json", help="Print JSON to stdout instead of a table.")] = False,
) -> None:
    """Every setting, its value and where it came from (default, file:line, env VARIABLE)."""
    from llmasos.settings import load_settings

    effective = load_settings()
    rows = [(key.replace("models.per_model.", "models."), value, src) for key, value, src in effective.rows()]
    if json_:
        typer.echo(
            json.dumps(
                {
                    "file": str(effective.path),
                    "settings": [{"key": k, "value": v, "source": s} for k, v, s in rows],
                },
                indent=2,
            )
        )
        return
    console = Console(highlight=False)
    exists = "" if effective.path.exists() else " (not there: defaults and the environment apply)"
    console.print(f"config file: {effective.path}{exists}", soft_wrap=True)
    table = Table(box=None, pad_edge=False)
    table.add_column("KEY", no_wrap=True)
    for column in ("VALUE", "SOURCE"):
        table.add_column(column, overflow="fold")
    for key, value, source in rows:
        table.add_row(key, json.dumps(value), source)
    console.print(table)
