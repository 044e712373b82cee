"""`llmasos call NAME [INPUT | -] [--param KEY=VALUE ...]`: run a service or a tool.

INPUT is text, or a JSON object when it is one (`'{"question": ..., "context": ...}'` for qa, a tool's
arguments such as `'{"expression": "2+2"}'`); `--text` keeps it text whatever it looks like."""

from __future__ import annotations

import json
import re
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


# How the programs' schema check names a value of the wrong type (`programs/schemas.py`).
_WRONG_TYPE = re.compile(r"params\.(?P<key>[\w-]+): .* is not of type '(?P<type>array|object)'")


def json_form_hint(message: str, texts: dict[str, str]) -> str:
    """`message` with the JSON to write appended, when it says that a --param given as plain text
    (`texts`: key -> text) should have been an array or an object."""
    wrong = _WRONG_TYPE.search(message)
    if wrong is None or wrong["key"] not in texts:
        return message
    key, text = wrong["key"], texts[wrong["key"]]
    if wrong["type"] == "array":
        example = json.dumps([part.strip() for part in text.split(",") if part.strip()] or ["..."])
    else:
        example = '{"key": "value"}'
    return f"{message}; a --param value is JSON when it parses: write it as -p {key}='{example}'"


def read_input(text: str, as_text: bool) -> Any:
    """The input as the program gets it: a JSON object when `text` is one (and not `as_text`)."""
    if not as_text and text.lstrip().startswith("{"):
        try:
            value = json.loads(text)
        except ValueError:
            return text
        if isinstance(value, dict):
            return value
    return text


def call(
    service: Annotated[str, typer.Argument(metavar="NAME", help="The service or tool to run.")],
    input_: Annotated[
        str | None, typer.Argument(metavar="INPUT", help="The input, or - to read stdin.")
    ] = None,
    param: Annotated[
        list[str] | None,
        typer.Option(
            "--param",
            "-p",
            help="KEY=VALUE (repeatable); VALUE is JSON when it parses, else text: "
            """-p labels='["a","b"]' -p max_tokens=20 -p target=French.""",
        ),
    ] = None,
    model: Annotated[str, typer.Option("--model", "-m", help="Model to run the service on.")] = "default",
    json_: Annotated[bool, typer.Option("--json", help="Print output, usage and details as JSON.")] = False,
    as_text: Annotated[bool, typer.Option("--text", help="Send INPUT as text even if it is JSON.")] = False,
) -> None:
    """Call a service (summarize, translate, qa, ...) or a tool (calculator, clock, ...); `llmasos plugins
    list` shows what is installed."""
    from llmasos.sdk.client import Client

    text = sys.stdin.read() if input_ in (None, "-") else input_
    if not text.strip():
        raise InvalidRequestError("no input: give it as an argument, or pipe it in with -")
    params = dict(parse_param(p) for p in param or ())
    try:
        with Client(model=model) as client:
            result = client.call_full(service, read_input(text, as_text), **params)
    except InvalidRequestError as err:
        texts = {key: value for key, value in params.items() if isinstance(value, str)}
        err.message = json_form_hint(err.message, texts)
        err.args = (err.message,)
        raise
    if json_:
        typer.echo(json.dumps(result, indent=2))
    elif isinstance(result["output"], str):
        typer.echo(result["output"])
    else:
        typer.echo(json.dumps(result["output"], indent=2))
