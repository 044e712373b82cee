"""`llmasos apps ...`: register apps and their keys, through the system calls as the local admin
(server or not), so every change is audited like `POST /os/apps`."""

from __future__ import annotations

import json
from dataclasses import asdict
from typing import TYPE_CHECKING, Annotated

import typer
from rich.console import Console
from rich.table import Table

from llmasos.cli.dates import human_time
from llmasos.cli.local import admin_syscalls, remove_app_on_server, revoke_keys_on_server
from llmasos.privacy.policy import PiiPolicy
from llmasos.security.apps import DEFAULT_CAPABILITIES, App

if TYPE_CHECKING:
    from llmasos.kernel.syscalls import Syscalls

app = typer.Typer(
    help="Apps: identities with a priority, quotas, capabilities and API keys.", no_args_is_help=True
)
JsonOpt = Annotated[bool, typer.Option("--json", help="Print JSON to stdout instead of a table.")]
PiiOpt = Annotated[
    list[str] | None,
    typer.Option(
        "--pii",
        help="Personal data: MODE for every direction, or DIRECTION=MODE (repeatable). Modes: off, "
        "pseudonymize, redact, block; directions: prompts, outputs, documents, audit.",
    ),
]


def _info(syscalls: Syscalls, caller: App, a: App) -> dict:
    return {**asdict(a), "keys": syscalls.key_hints(caller, a.name)}


@app.command()
def create(
    name: str,
    priority: Annotated[str, typer.Option(help="realtime, interactive, normal or batch.")] = "normal",
    weight: Annotated[float, typer.Option(help="Share of the engine relative to apps of its class.")] = 1.0,
    tokens_per_minute: Annotated[int, typer.Option(help="Token quota per rolling minute; 0 = none.")] = 0,
    max_concurrent: Annotated[int, typer.Option(help="Processes holding the engine at once; 0 = none.")] = 16,
    max_queued: Annotated[int, typer.Option(help="Processes waiting for the engine; 0 = none.")] = 64,
    requests_per_minute: Annotated[
        int, typer.Option(help="Requests it may start a minute; 0 = the server's default.")
    ] = 0,
    request_burst: Annotated[
        int, typer.Option(help="Requests it may start at once after a pause; 0 = the server's default.")
    ] = 0,
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
    pii: PiiOpt = None,
    json_: JsonOpt = False,
) -> None:
    """Register an app and print its API key (shown once; only a hash is kept)."""
    new = App(
        name,
        priority=priority,
        weight=weight,
        tokens_per_minute=tokens_per_minute,
        max_concurrent=max_concurrent,
        max_queued=max_queued,
        requests_per_minute=requests_per_minute,
        request_burst=request_burst,
        capabilities=tuple(allow or DEFAULT_CAPABILITIES),
        share_prefix_cache=share_prefix_cache,
        audit_content=audit_content,
        pii=PiiPolicy.parse(pii),
    )
    with admin_syscalls() as (syscalls, admin):
        created, key = syscalls.create_app(admin, new)
        info = _info(syscalls, admin, created)
    if json_:
        typer.echo(json.dumps({**info, "api_key": key}, indent=2))
        return
    typer.echo(key)
    typer.echo(
        f"created app {name!r} ({priority}); the key above is shown once: keep it, it cannot be recovered",
        err=True,
    )


@app.command()
def update(name: str, pii: PiiOpt = None, json_: JsonOpt = False) -> None:
    """Change an app's settings; a running server applies them from its next request."""
    if not pii:
        raise typer.BadParameter("nothing to change: give --pii MODE or --pii DIRECTION=MODE")
    items = [item.strip() for spec in pii for item in spec.split(",") if item.strip()]
    with admin_syscalls() as (syscalls, admin):
        changed = PiiPolicy.parse(items)
        if all("=" in item for item in items):  # DIRECTION=MODE alone: the other directions stay
            named = {item.partition("=")[0] for item in items}
            current = syscalls.get_app(admin, name).pii.as_dict()
            changed = PiiPolicy(**{**current, **{d: getattr(changed, d) for d in named}})
        updated = syscalls.update_app(admin, name, pii=changed)
        info = _info(syscalls, admin, updated)
    if json_:
        typer.echo(json.dumps(info, indent=2))
        return
    typer.echo(f"updated app {name!r}: pii {_policy_text(updated.pii)}", err=True)


def _policy_text(policy: PiiPolicy) -> str:
    return " ".join(f"{k}={v}" for k, v in policy.as_dict().items())


@app.command("list")
def list_(json_: JsonOpt = False) -> None:
    """Every app."""
    with admin_syscalls() as (syscalls, admin):
        apps = syscalls.list_apps(admin)
        infos = [_info(syscalls, admin, a) for a in apps]
    if json_:
        typer.echo(json.dumps(infos, indent=2))
        return
    # Names are what users type next: never cut; the numbers and capabilities fold when narrow.
    table = Table(box=None, pad_edge=False, collapse_padding=True)
    table.add_column("NAME", no_wrap=True, min_width=max(len(a.name) for a in apps) if apps else None)
    table.add_column("PRIORITY", no_wrap=True)
    for column in ("WEIGHT", "TOKENS/MIN", "CONCURRENT", "QUEUED"):
        table.add_column(column, justify="right", overflow="fold")
    table.add_column("CREATED", no_wrap=True)
    table.add_column("CAPABILITIES", overflow="fold")
    for a in apps:
        table.add_row(
            a.name,
            a.priority,
            f"{a.weight:g}",
            str(a.tokens_per_minute or "-"),
            str(a.max_concurrent or "-"),
            str(a.max_queued or "-"),
            human_time(a.created_at),
            " ".join(a.capabilities),
        )
    Console(highlight=False).print(table)


@app.command()
def show(name: str, json_: JsonOpt = False) -> None:
    """One app's settings and its keys' first characters."""
    with admin_syscalls() as (syscalls, admin):
        info = _info(syscalls, admin, syscalls.get_app(admin, name))
    if json_:
        typer.echo(json.dumps(info, indent=2))
        return
    for key, value in info.items():
        if key == "created_at":
            value = human_time(value)
        if key == "pii":
            value = _policy_text(PiiPolicy.parse(value))
        typer.echo(f"{key:20} {' '.join(value) if isinstance(value, list | tuple) else value}")


@app.command()
def rm(name: str) -> None:
    """Remove an app and revoke its keys; its running processes are cancelled."""
    if not remove_app_on_server(name):
        with admin_syscalls() as (syscalls, admin):
            syscalls.remove_app(admin, name)
    typer.echo(f"removed app {name!r} and its keys", err=True)


@app.command("new-key")
def new_key(
    name: str, revoke_old: Annotated[bool, typer.Option(help="Revoke the app's other keys.")] = False
) -> None:
    """Issue another key for an app (e.g. to rotate it)."""
    with admin_syscalls() as (syscalls, admin):
        key, revoked = syscalls.issue_key(admin, name, revoke_old=revoke_old)
    typer.echo(key)
    if revoked:
        typer.echo(f"revoked {revoked} old key(s) of {name!r}", err=True)


@app.command()
def revoke(name: str) -> None:
    """Revoke every key of an app: refused from now on, and its running processes are cancelled
    (through the running server, when there is one, which holds them)."""
    revoked = revoke_keys_on_server(name)
    if revoked is None:
        with admin_syscalls() as (syscalls, admin):
            revoked = syscalls.revoke_keys(admin, name)
    typer.echo(f"revoked {revoked} key(s) of {name!r}", err=True)
