"""`llmasos plugins list [--json]`: the installed plugins, where each comes from and what it adds."""

from __future__ import annotations

import json
from typing import Annotated

import typer

app = typer.Typer(help="Plugins: installed packages that add services and tools.", no_args_is_help=True)


@app.command("list")
def list_plugins(
    json_: Annotated[bool, typer.Option("--json", help="Print the plugins as JSON.")] = False,
) -> None:
    """The plugins installed here (entry points `llmasos.plugins`), the programs each added, and why
    any failed to load (a failed plugin is skipped; the others work)."""
    from llmasos.programs import default_registry

    registry = default_registry()
    plugins = [p.to_dict() for p in registry.plugins]
    if json_:
        typer.echo(json.dumps({"plugins": plugins}, indent=2))
        return
    for plugin in plugins:
        source = f"{plugin['distribution'] or '?'} {plugin['version'] or ''}".strip()
        typer.echo(f"{plugin['name']:<16} {source:<24} {plugin['module']}")
        if plugin["error"] is not None:
            typer.secho(f"    failed, skipped: {plugin['error']}", fg=typer.colors.RED)
        else:
            for name in plugin["programs"]:
                program = registry.get(name)
                summary = program.description.split(". ")[0].split("; ")[0]
                typer.echo(f"    {program.kind:<8} {name:<14} {summary}")
