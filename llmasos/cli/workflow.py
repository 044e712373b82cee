"""`llmasos workflow ...`: validate, define and run workflow files; list, show, follow, cancel, resume
and approve runs; draw a run's graph. Each command is one `client.workflows` call (the server's when
one runs, else an in-process kernel's)."""

from __future__ import annotations

import json
import sys
from pathlib import Path
from typing import Annotated, Any

import typer

from llmasos.cli.call import parse_param
from llmasos.cli.dates import local_time

app = typer.Typer(help="Workflows: durable graphs of services, tools and model calls.", no_args_is_help=True)

FileArg = Annotated[Path, typer.Argument(metavar="FILE", help="A workflow in YAML or JSON.")]
RunArg = Annotated[str, typer.Argument(metavar="RUN", help="The run's id (`llmasos workflow ps`).")]
JsonOpt = Annotated[bool, typer.Option("--json", help="Print JSON.")]


def _client():
    from llmasos.sdk.client import Client

    return Client()


def _note_when_local(client) -> None:
    """Without a server, this CLI process drives nothing once it exits: say where the run goes on."""
    if client.mode == "local":
        typer.echo("note: no server runs; the run goes on when `llmasos serve` starts", err=True)


def _read(path: Path) -> str:
    from llmasos.errors import WorkflowValidationError

    try:
        return path.read_text()
    except OSError as err:
        raise WorkflowValidationError(f"cannot read {path}: {err.strerror}; check the path") from None


@app.command()
def validate(file: FileArg) -> None:
    """Check a workflow file as a submission would: the graph, the programs, templates and types."""
    with _client() as client:
        result = client.workflows.validate(_read(file))
    typer.echo(f"{file}: valid ({result['name']}: {len(result['steps'])} steps)")


@app.command()
def define(file: FileArg) -> None:
    """Store a workflow under its name, for `run --name` and for other workflows' steps."""
    with _client() as client:
        result = client.workflows.define(_read(file))
    typer.echo(f"defined {result['name']}")


@app.command()
def run(
    file: Annotated[Path | None, typer.Argument(metavar="FILE", help="A workflow in YAML or JSON.")] = None,
    name: Annotated[str | None, typer.Option("--name", help="Run a defined workflow instead.")] = None,
    input_: Annotated[
        list[str] | None,
        typer.Option("--input", "-i", help="KEY=VALUE (repeatable); VALUE is JSON when it parses."),
    ] = None,
    wait: Annotated[bool, typer.Option("--wait", help="Wait for the run to end and print it.")] = False,
    json_: JsonOpt = False,
) -> None:
    """Start a run of FILE (or of `--name`); prints its id, or with --wait its steps and output."""
    from llmasos.errors import WorkflowValidationError

    if (file is None) == (name is None):
        raise WorkflowValidationError("give a workflow FILE or --name of a defined one (not both)")
    inputs = dict(parse_param(text) for text in input_ or ())
    with _client() as client:
        spec = _read(file) if file is not None else None
        result = client.workflows.run(spec, workflow=name, inputs=inputs, wait=wait)
        if not wait:
            _note_when_local(client)
    if json_:
        typer.echo(json.dumps(result, indent=2))
    elif wait:
        _print_run(result)
    else:
        typer.echo(result["id"])
    if wait and result["status"] == "failed":
        sys.exit(1)


@app.command()
def ps(
    status: Annotated[str | None, typer.Option("--status", help="Only runs in this state.")] = None,
    json_: JsonOpt = False,
) -> None:
    """The runs of this app (every app's for an admin), newest first."""
    with _client() as client:
        runs = client.workflows.runs(status)
    if json_:
        typer.echo(json.dumps({"runs": runs}, indent=2))
        return
    typer.echo(f"{'RUN':<18} {'WORKFLOW':<20} {'APP':<14} {'STATUS':<10} CREATED")
    for r in runs:
        typer.echo(
            f"{r['id']:<18} {r['workflow']:<20} {r['app']:<14} {r['status']:<10} "
            f"{local_time(r['created_at'])}"
        )


@app.command()
def show(run_id: RunArg, json_: JsonOpt = False) -> None:
    """A run's steps: status, attempts, timings, outputs and errors."""
    with _client() as client:
        result = client.workflows.get(run_id)
    if json_:
        typer.echo(json.dumps(result, indent=2))
    else:
        _print_run(result)


@app.command()
def cancel(run_id: RunArg) -> None:
    """Stop a run: its running steps' model calls end, nothing more starts."""
    with _client() as client:
        result = client.workflows.cancel(run_id)
    typer.echo(f"{run_id}: {result['status']}")


@app.command()
def resume(run_id: RunArg) -> None:
    """Run a failed or cancelled run again: its failed steps re-run, its committed results stay."""
    with _client() as client:
        result = client.workflows.resume(run_id)
        _note_when_local(client)
    typer.echo(f"{run_id}: {result['status']}")


@app.command()
def approve(
    run_id: RunArg,
    step: Annotated[str, typer.Argument(help="The wait step to end.")],
    data: Annotated[str | None, typer.Option("--data", help="The step's output (JSON, or text).")] = None,
) -> None:
    """End a run's wait step, with --data as its output; the run goes on."""
    value: Any = None
    if data is not None:
        _, value = parse_param(f"data={data}")
    with _client() as client:
        result = client.workflows.approve(run_id, step, value)
        _note_when_local(client)
    typer.echo(f"{run_id}: {step} approved; the run is {result['status']}")


@app.command()
def graph(
    run_id: Annotated[str | None, typer.Argument(metavar="[RUN]", help="A run (coloured by state).")] = None,
    workflow: Annotated[str | None, typer.Option("--workflow", help="A defined workflow instead.")] = None,
    output: Annotated[
        Path | None, typer.Option("--output", "-o", help="Write here (default: stdout).")
    ] = None,
    format_: Annotated[str, typer.Option("--format", "-f", help="svg, png or dot.")] = "svg",
) -> None:
    """Draw a run's graph, each step coloured by its state (Graphviz), or a defined workflow's."""
    with _client() as client:
        picture = client.workflows.graph(run_id, workflow=workflow, format=format_)
    if output is None:
        sys.stdout.buffer.write(picture)
    else:
        from llmasos.storage.files import write_private

        write_private(output, picture, sync_folder=False)
        typer.echo(f"wrote {output}")


def _print_run(run: dict) -> None:
    typer.echo(
        f"run {run['id']}  {run['workflow']}  {run['status']}" + (f": {run['error']}" if run["error"] else "")
    )
    for step in run["steps"]:
        took = f"{step['duration_s']:.3f}s" if step.get("duration_s") is not None else ""
        tries = step.get("attempts", 0)
        typer.echo(f"  {step['step']:<16} {step['kind']:<9} {step['status']:<10} tries={tries:<2} {took}")
        if step.get("error"):
            typer.echo(f"      error: {step['error']}")
        elif step.get("output") is not None:
            text = json.dumps(step["output"], ensure_ascii=False)
            typer.echo(f"      output: {text[:200]}{'...' if len(text) > 200 else ''}")
    if run.get("output") is not None:
        typer.echo(f"output: {json.dumps(run['output'], ensure_ascii=False)}")
