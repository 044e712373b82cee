"""`llmasos apps ...`: register apps and their keys (works on `$LLMASOS_HOME` directly, server or not)."""

from __future__ import annotations

import json
from dataclasses import asdict
from typing import Annotated

import typer
from rich.console import Console
from rich.table import Table

from llmasos.security.apps import DEFAULT_CAPABILITIES, App, AppRegistry

app = typer.Typer(
    help="Apps: identities with a priority, quotas, capabilities and API keys.", no_args_is_help=True
)
JsonOpt = Annotated[bool, typer.Option("--json", help="Print JSON to stdout instead of a table.")]


def _info(registry: AppRegistry, a: App) -> dict:
    return {**asdict(a), "keys": registry.key_hints(a.name)}


@app.command()
def create(
    name: str,
    priority: Annotated[str, typer.Option(help="realtime, interactive, normal or batch.")] = "normal",
    weight: Annotated[float, typer.Option(help="Share of the engine relative to apps of its class.")] = 1.0,
    tokens_per_minute: Annotated[int, typer.Option(help="Token quota per rolling minute; 0 = none.")] = 0,
    max_concurrent: Annotated[int, typer.Option(help="Processes holding the engine at once; 0 = none.")] = 16,
    max_queued: Annotated[int, typer.Option(help="Processes waiting for the engine; 0 = none.")] = 64,
    allow: Annotated[
        list[str] | None,
        typer.Option(
            "--allow", help="Capability, e.g. model:smollm2-*, service:summarize, admin (repeatable)."
        ),
    ] = None,
    share_prefix_cache: Annotated[
        bool, typer.Option(help="Share cached prompt prefixes with other apps.")
    ] = False,
    audit_content: Annotated[bool, typer.Option(help="Keep prompts and outputs in the audit log.")] = False,
    json_: JsonOpt = False,
) -> None:
    """Register an app and print its API key (shown once; only a hash is kept)."""
    registry = AppRegistry()
    new = App(
        name,
        priority=priority,
        weight=weight,
        tokens_per_minute=tokens_per_minute,
        max_concurrent=max_concurrent,
        max_queued=max_queued,
        capabilities=tuple(allow or DEFAULT_CAPABILITIES),
        share_prefix_cache=share_prefix_cache,
        audit_content=audit_content,
    )
    registry.create(new)
    key = registry.issue_key(name)
    if json_:
        typer.echo(json.dumps({**_info(registry, new), "api_key": key}, indent=2))
        return
    typer.echo(key)
    typer.echo(
        f"created app {name!r} ({priority}); the key above is shown once: keep it, it cannot be recovered",
        err=True,
    )


@app.command("list")
def list_(json_: JsonOpt = False) -> None:
    """Every app."""
    registry = AppRegistry()
    apps = registry.list()
    if json_:
        typer.echo(json.dumps([_info(registry, a) for a in apps], indent=2))
        return
    table = Table("name", "priority", "weight", "tokens/min", "concurrent", "queued", "capabilities")
    for a in apps:
        table.add_row(
            a.name,
            a.priority,
            f"{a.weight:g}",
            str(a.tokens_per_minute or "-"),
            str(a.max_concurrent or "-"),
            str(a.max_queued or "-"),
            " ".join(a.capabilities),
        )
    Console(highlight=False).print(table)


@app.command()
def show(name: str, json_: JsonOpt = False) -> None:
    """One app's settings and its keys' first characters."""
    registry = AppRegistry()
    info = _info(registry, registry.get(name))
    if json_:
        typer.echo(json.dumps(info, indent=2))
        return
    for key, value in info.items():
        typer.echo(f"{key:20} {' '.join(value) if isinstance(value, list | tuple) else value}")


@app.command()
def rm(name: str) -> None:
    """Remove an app and revoke its keys."""
    AppRegistry().remove(name)
    typer.echo(f"removed app {name!r} and its keys", err=True)


@app.command("new-key")
def new_key(
    name: str, revoke_old: Annotated[bool, typer.Option(help="Revoke the app's other keys.")] = False
) -> None:
    """Issue another key for an app (e.g. to rotate it)."""
    registry = AppRegistry()
    revoked = registry.revoke_keys(name) if revoke_old else 0
    typer.echo(registry.issue_key(name))
    if revoked:
        typer.echo(f"revoked {revoked} old key(s) of {name!r}", err=True)
