"""`llmasos call SERVICE [INPUT | -] [--param KEY=VALUE ...]`: run a system service."""

from __future__ import annotations

import json
import sys
from typing import Annotated, Any

import typer

from llmasos.errors import InvalidRequestError


def parse_param(text: str) -> tuple[str, Any]:
    """KEY=VALUE; VALUE is read as JSON when it parses (numbers, lists, objects), else as text."""
    key, sep, value = text.partition("=")
    if not sep or not key:
        raise InvalidRequestError(f"--param {text!r} is not KEY=VALUE (e.g. --param target=French)")
    try:
        return key, json.loads(value)
    except ValueError:
        return key, value


def call(
    service: str,
    input_: Annotated[
        str | None, typer.Argument(metavar="INPUT", help="The input, or - to read stdin.")
    ] = None,
    param: Annotated[list[str] | None, typer.Option("--param", "-p", help="KEY=VALUE (repeatable).")] = None,
    model: Annotated[str, typer.Option("--model", "-m", help="Model to run the service on.")] = "default",
    json_: Annotated[bool, typer.Option("--json", help="Print output, usage and details as JSON.")] = False,
) -> None:
    """Call a system service (summarize, translate, qa, code, classify, extract, chat)."""
    from llmasos.sdk.client import Client

    text = sys.stdin.read() if input_ in (None, "-") else input_
    if not text.strip():
        raise InvalidRequestError("no input: give it as an argument, or pipe it in with -")
    params = dict(parse_param(p) for p in param or ())
    with Client(model=model) as client:
        result = client.call_full(service, text, **params)
    if json_:
        typer.echo(json.dumps(result, indent=2))
    elif isinstance(result["output"], str):
        typer.echo(result["output"])
    else:
        typer.echo(json.dumps(result["output"], indent=2))
