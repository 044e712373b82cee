"""`llmasos node start` (join this machine to a cluster) and `llmasos nodes` (the cluster's nodes)."""

from __future__ import annotations

import json
import socket
from pathlib import Path
from typing import Annotated

import typer
from rich.console import Console
from rich.table import Table

from llmasos.errors import ConfigurationError

app = typer.Typer(help="Cluster nodes: join this machine to a cluster (`serve --cluster` runs the head).")


def _names(text: str) -> tuple[str, ...]:
    return tuple(dict.fromkeys(part.strip() for part in text.split(",") if part.strip()))


@app.command("start")
def start(
    address: Annotated[str, typer.Option("--address", help="The head's Ray address, HOST:PORT.")],
    name: Annotated[
        str | None, typer.Option("--name", help="This node's name; the host name by default.")
    ] = None,
    capabilities: Annotated[
        str, typer.Option("--capabilities", help="What it can do: llm, vision, speech, embed (commas).")
    ] = "llm",
    models: Annotated[str, typer.Option("--models", help="Library models it serves (commas).")] = "",
    threads: Annotated[int, typer.Option("--threads", min=1, help="CPU threads its engines use.")] = 1,
    host: Annotated[str, typer.Option("--host", help="The address this node binds to.")] = "127.0.0.1",
    secret_file: Annotated[
        Path | None,
        typer.Option(
            "--secret-file", help="The head's cluster secret; $LLMASOS_HOME/cluster_secret by default."
        ),
    ] = None,
) -> None:
    """Join this machine to the cluster at --address with its capabilities and models, until interrupted;
    when the head goes away (a restart), join it again once it is back."""
    import signal
    import threading

    from llmasos.cluster.loopback import use_loopback

    use_loopback(address)  # before Ray is imported (the node's process inherits it)
    from llmasos.cluster.secret import secret_path
    from llmasos.cluster.supervise import keep_node_joined
    from llmasos.tools.nodes import NODE_TOOLS

    path = secret_file or secret_path()
    if not path.is_file():
        raise ConfigurationError(
            f"no cluster secret at {path}; copy the head's $LLMASOS_HOME/cluster_secret here (mode 0600) "
            "or pass --secret-file"
        )
    node = name or socket.gethostname()
    stop = threading.Event()
    for signum in (signal.SIGINT, signal.SIGTERM):
        signal.signal(signum, lambda *_: stop.set())
    node_args = (address, node, _names(capabilities), _names(models), path.read_text().strip())
    options = {"threads": threads, "host": host, "tools": NODE_TOOLS, "on_joined": announce_joined}
    keep_node_joined(address, node_args, options, stop)


def announce_joined(view) -> None:  # runs in the node's process: a module function, so it pickles
    typer.echo(f"node {view.name} joined: " + json.dumps(view.as_dict()["models"]), err=True)


def nodes(
    json_: Annotated[bool, typer.Option("--json", help="Print JSON to stdout instead of a table.")] = False,
) -> None:
    """The nodes of the cluster the local server runs (`serve --cluster`): capabilities, models, health."""
    from llmasos.sdk.client import Client

    with Client(local=False) as client:
        listed = client.nodes()
    if json_:
        typer.echo(json.dumps(listed, indent=2))
        return
    if not listed:
        typer.echo("no nodes (the server runs on one box, or no node has joined)", err=True)
        return
    table = Table(box=None, pad_edge=False)
    for column in ("NODE", "CAPABILITIES", "MODELS", "PROCESSES", "HEALTH"):
        table.add_column(column)
    for node in listed:
        models = ", ".join(m + ("" if h["healthy"] else " (unhealthy)") for m, h in node["models"].items())
        health = "healthy" if node["healthy"] else ("dead" if not node["alive"] else "unhealthy")
        table.add_row(node["name"], ",".join(node["capabilities"]), models, str(node["processes"]), health)
    console = Console(highlight=False)
    console.print(table)
    for node in listed:
        if node["reason"]:
            console.print(f"{node['name']}: {node['reason']}", soft_wrap=False)
