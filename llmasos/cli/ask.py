"""`llmasos ask "..." [--file F]` and `llmasos voice IN.wav -o OUT.wav`: plain-language requests,
routed to the right service or tool."""

from __future__ import annotations

import base64
import json
import os
from pathlib import Path
from typing import Annotated

import typer

from llmasos.errors import InvalidRequestError


def _read(path: Path, what: str) -> bytes:
    try:
        return path.read_bytes()
    except OSError as err:
        raise InvalidRequestError(f"cannot read the {what} {str(path)!r}: {err.strerror}") from None


def ask(
    request: Annotated[str, typer.Argument(help="What you want, in plain language.")],
    file: Annotated[
        Path | None, typer.Option("--file", "-f", help="An image or WAV file that goes with it.")
    ] = None,
    model: Annotated[str, typer.Option("--model", "-m", help="The language model to use.")] = "default",
    explain: Annotated[
        bool, typer.Option("--explain", help="Also print the route, its scores and reasons.")
    ] = False,
    json_: Annotated[bool, typer.Option("--json", help="Print the whole result as JSON.")] = False,
    output: Annotated[
        Path | None,
        typer.Option("--output", "-o", help="Write the audio a step returned (e.g. speak) to this WAV."),
    ] = None,
) -> None:
    """Route a request to the right service, tool or chain, run it, and print the answer."""
    from llmasos.sdk.client import Client

    data = _read(file, "file") if file is not None else None
    with Client(model=model) as client:
        result = client.ask(request, file=data)
    if json_:
        typer.echo(json.dumps(result, indent=2, ensure_ascii=False))
    else:
        typer.echo(result["answer"])
    if output is not None:
        _write_step_audio(result, output)
    if explain and not json_:
        route = result["route"]
        top = ", ".join(f"{k} {v:.3f}" for k, v in list(route["scores"].items())[:4])
        typer.echo(f"route: {route['target']} (decided by {route['decided_by']}); scores: {top}", err=True)
        for reason in route["reasons"]:
            typer.echo(f"  - {reason}", err=True)


def _write_step_audio(result: dict, output: Path) -> None:
    """The last audio a step of `result` returned, written to `output`."""
    spoken = [s["output"]["audio_base64"] for s in result["steps"] if "audio_base64" in (s["output"] or {})]
    if not spoken:
        raise InvalidRequestError(
            f"no step returned audio, so nothing was written to {str(output)!r}; "
            "ask for speech (e.g. 'say ...') or leave out --output"
        )
    _write_whole(output, base64.b64decode(spoken[-1]))
    typer.echo(f"wrote {output}", err=True)


def _write_whole(output: Path, data: bytes) -> None:
    tmp = output.with_name(output.name + ".tmp")
    tmp.write_bytes(data)
    os.replace(tmp, output)  # never a half-written WAV where the user looks


def voice(
    wav: Annotated[Path, typer.Argument(metavar="IN.wav", help="The spoken question.")],
    output: Annotated[Path, typer.Option("--output", "-o", help="Where to write the spoken answer (WAV).")],
    model: Annotated[str, typer.Option("--model", "-m", help="The language model to use.")] = "default",
) -> None:
    """The voice loop: transcribe the question, route and answer it, speak the answer into a WAV."""
    from llmasos.sdk.client import Client

    data = _read(wav, "recording")
    with Client(model=model) as client:
        result = client.voice(data)
    _write_whole(output, base64.b64decode(result["audio_base64"]))
    typer.echo(f"heard: {result['transcript']}", err=True)
    typer.echo(f"route: {result['route']['target']}", err=True)
    typer.echo(result["answer"])
