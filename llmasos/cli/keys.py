"""`llmasos keys`: the master key that wraps every app's data key and every encrypted model.

`status` says where the key comes from and what it wraps; `rotate` re-wraps everything under a new
one (servers keep running); `generate` prints a new key for `LLMASOS_MASTER_KEY` or a keyring."""

from __future__ import annotations

import json
from typing import Annotated

import typer

from llmasos.cli.local import admin_syscalls
from llmasos.security import master_key
from llmasos.security.data_keys import data_keys

app = typer.Typer(help="The master key: status, rotate, generate.", no_args_is_help=True)


@app.command()
def status(as_json: Annotated[bool, typer.Option("--json", help="Print JSON.")] = False) -> None:
    """Where the master key comes from (never the key itself) and which keys it wraps."""
    key = master_key.configured_key()
    info = {
        "master_key_id": key.key_id if key else None,
        "source": key.source if key else None,
        "key_file": str(master_key.key_file()),
        "rotation_pending": master_key.next_key_file().exists(),
        "data_keys_by_master_key": data_keys().master_key_ids(),
    }
    if as_json:
        typer.echo(json.dumps(info, indent=2))
        return
    if key is None:
        typer.echo(f"no master key yet (one is made in {master_key.key_file()} when first needed)")
    else:
        typer.echo(f"master key {key.key_id} from {key.source}")
    for key_id, count in info["data_keys_by_master_key"].items():
        typer.echo(f"  {count} app data key(s) wrapped under {key_id}")


@app.command()
def rotate() -> None:
    """Re-wrap every app data key and encrypted model under a new master key, without downtime."""
    with admin_syscalls() as (syscalls, admin):
        report = syscalls.rotate_master_key(admin)
    typer.echo(
        f"master key {', '.join(report.old_key_ids)} -> {report.new_key_id}: re-wrapped {report.data_keys} "
        f"app data key(s) and {report.model_files} encrypted model file(s)"
    )
    if report.new_key_file:
        typer.echo(
            f"the configured key is not a file: put the new key from {report.new_key_file} where it is "
            f"(${master_key.ENV_VAR} or the keyring), then delete that file"
        )


@app.command()
def generate() -> None:
    """Print a new random master key (base64), e.g. for LLMASOS_MASTER_KEY. Nothing is stored."""
    typer.echo(master_key.encode_key(master_key.new_key()))
