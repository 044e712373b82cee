"""`llmasos chat`: an interactive conversation with a model (through the server when one runs).

Lines that start with `/` are commands handled here, never sent to the model. Ctrl-C during an answer
stops that answer and keeps the conversation; at the prompt it only clears the line."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import typer

from llmasos.cli.chat_input import line_reader
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
from llmasos.storage.files import write_private

HELP = """commands (not sent to the model):
  /help            this list
  /reset           forget the conversation (the system prompt stays)
  /system TEXT     set the system prompt (an empty TEXT removes it)
  /save FILE       write the conversation to FILE as JSON messages
  /exit            leave (also /quit, /bye, Ctrl-D)
Ctrl-C stops an answer and keeps the conversation; a pasted block of lines is one message."""

EXIT_WORDS = ("/exit", "/quit", "/bye")


def chat(
    model: ModelOption = DEFAULT_MODEL,
    max_tokens: MaxTokensOption = 512,
    temperature: TemperatureOption = 0.7,
    top_p: TopPOption = 0.9,
    seed: SeedOption = None,
    system: SystemOption = None,
    verbose: VerboseOption = False,
) -> None:
    """Talk with a model. /help lists the commands; /exit or Ctrl-D leaves."""
    fields = sampling_fields(max_tokens=max_tokens, temperature=temperature, top_p=top_p, seed=seed)
    with Connection(model, verbose) as connection:
        _converse(connection, fields, Conversation(system))


class Conversation:
    """The messages so far, and the system prompt that heads them."""

    def __init__(self, system: str | None) -> None:
        self.system = system
        self.turns: list[dict] = []

    @property
    def messages(self) -> list[dict]:
        head = [{"role": "system", "content": self.system}] if self.system else []
        return head + self.turns


def _converse(connection: Connection, fields: dict[str, Any], conversation: Conversation) -> None:
    typer.echo(f"Chatting with {connection.model}. /help for commands, /exit to leave.", err=True)
    if not connection.has_chat_template:
        typer.echo(
            f"Note: {connection.model} has no chat template (a base model, trained to continue text): "
            "turns are written in the plain fallback format ('User: ...' / 'Assistant:'), and its "
            "answers may wander. `llmasos run` completes a prompt as plain text instead.",
            err=True,
        )
    read_line = line_reader()
    while True:
        try:
            text = read_line().strip()
        except EOFError:
            typer.echo("", err=True)
            return
        except KeyboardInterrupt:  # at the prompt: a fresh line, as a shell does
            typer.echo("(Ctrl-D or /exit leaves)", err=True)
            continue
        if not text:
            continue
        if text.startswith("/"):
            if text.split()[0] in EXIT_WORDS:
                return
            _command(text, conversation)
            continue
        _answer(connection, fields, conversation, text)


def _answer(connection: Connection, fields: dict[str, Any], conversation: Conversation, text: str) -> None:
    conversation.turns.append({"role": "user", "content": text})
    try:
        reply = connection.stream_reply(conversation.messages, fields, stop_on_interrupt=True)
    except ContextWindowExceededError:
        typer.echo("The conversation no longer fits the context window; /reset to start over.", err=True)
        conversation.turns.pop()
        return
    conversation.turns.append({"role": "assistant", "content": reply})
    if connection.stopped is not None:
        typer.echo(f"[stopped: {connection.stopped}]", err=True)


def _command(text: str, conversation: Conversation) -> None:
    word, _, argument = text.partition(" ")
    argument = argument.strip()
    if word in ("/help", "/?"):
        typer.echo(HELP, err=True)
    elif word in ("/reset", "/clear"):
        conversation.turns = []
        typer.echo("(conversation forgotten)", err=True)
    elif word == "/system":
        conversation.system = argument or None
        typer.echo("(system prompt set)" if argument else "(system prompt removed)", err=True)
    elif word == "/save":
        if not argument:
            typer.echo("/save needs a file name: /save chat.json", err=True)
            return
        path = Path(argument).expanduser()
        try:
            write_private(path, json.dumps(conversation.messages, indent=2) + "\n", sync_folder=False)
        except OSError as err:
            typer.echo(f"cannot write {path}: {err.strerror}", err=True)
            return
        typer.echo(f"(saved {len(conversation.messages)} messages to {path})", err=True)
    else:
        typer.echo(f"unknown command {word!r}; /help lists them", err=True)
