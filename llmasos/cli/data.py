"""`llmasos data export APP DIR`: an app's data written out as files, through the running server
when there is one, else an in-process kernel (as the local admin app)."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Annotated

import typer

data_app = typer.Typer(help="An app's data as a whole: export.", no_args_is_help=True)


@data_app.command("export")
def export(
    app: Annotated[str, typer.Argument(help="The app whose data to export.")],
    folder: Annotated[Path, typer.Argument(help="A new or empty folder to write it into.")],
    json_: Annotated[bool, typer.Option("--json", help="Print the manifest as JSON.")] = False,
) -> None:
    """Write APP's files, vector stores, chunks, conversations, responses, key-value data and
    knowledge triples into FOLDER as JSON lines, with the original files."""
    from llmasos.sdk.client import Client

    with Client() as client:
        manifest = client.export(app, folder)
    if json_:
        typer.echo(json.dumps(manifest, indent=2))
        return
    counts = ", ".join(f"{n} {what.replace('_', ' ')}" for what, n in manifest["counts"].items())
    typer.echo(f"exported {app} into {folder}: {counts}")
