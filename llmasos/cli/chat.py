"""`llmasos chat`: an interactive conversation with a model (through the server when one runs)."""

from __future__ import annotations

from typing import Any

import typer

from llmasos.cli.reply import (
    Connection,
    MaxTokensOption,
    ModelOption,
    SeedOption,
    SystemOption,
    TemperatureOption,
    TopPOption,
    VerboseOption,
    sampling_fields,
)
from llmasos.config import DEFAULT_MODEL
from llmasos.errors import ContextWindowExceededError


def chat(
    model: ModelOption = DEFAULT_MODEL,
    max_tokens: MaxTokensOption = 512,
    temperature: TemperatureOption = 0.7,
    top_p: TopPOption = 0.9,
    seed: SeedOption = None,
    system: SystemOption = None,
    verbose: VerboseOption = False,
) -> None:
    """Talk with a model. /reset forgets the conversation; /exit or Ctrl-D leaves."""
    fields = sampling_fields(max_tokens=max_tokens, temperature=temperature, top_p=top_p, seed=seed)
    with Connection(model, verbose) as connection:
        _converse(connection, fields, system)


def _converse(connection: Connection, fields: dict[str, Any], system: str | None) -> None:
    base = [{"role": "system", "content": system}] if system else []
    messages = list(base)
    typer.echo(f"Chatting with {connection.model}. /reset to start over, /exit to leave.", err=True)
    while True:
        try:
            line = input(">>> ")
        except EOFError:
            typer.echo("", err=True)
            return
        text = line.strip()
        if not text:
            continue
        if text in ("/exit", "/quit", "/bye"):
            return
        if text == "/reset":
            messages = list(base)
            continue
        messages.append({"role": "user", "content": text})
        try:
            reply = connection.stream_reply(messages, fields)
        except ContextWindowExceededError:
            typer.echo("The conversation no longer fits the context window; /reset to start over.", err=True)
            messages.pop()
            continue
        messages.append({"role": "assistant", "content": reply})
