"""`llmasos run`: one answer from a model, streamed to stdout (through the server when one runs)."""

from __future__ import annotations

import sys
from typing import Annotated

import typer

from llmasos.cli.reply import (
    Connection,
    MaxTokensOption,
    ModelOption,
    RepetitionOption,
    SeedOption,
    StopOption,
    SystemOption,
    TemperatureOption,
    TopKOption,
    TopPOption,
    VerboseOption,
    sampling_fields,
)
from llmasos.config import DEFAULT_MODEL


def run(
    prompt: Annotated[str, typer.Argument(help="The prompt; - reads it from stdin.")],
    model: ModelOption = DEFAULT_MODEL,
    max_tokens: MaxTokensOption = 256,
    temperature: TemperatureOption = 0.0,
    top_p: TopPOption = 1.0,
    top_k: TopKOption = 0,
    repetition_penalty: RepetitionOption = 1.0,
    seed: SeedOption = None,
    system: SystemOption = None,
    stop: StopOption = None,
    raw: Annotated[
        bool, typer.Option("--raw", help="Send the prompt as is, without the chat template.")
    ] = False,
    verbose: VerboseOption = False,
) -> None:
    """One answer from a model, streamed to stdout."""
    if prompt == "-":
        prompt = sys.stdin.read()
    fields = sampling_fields(
        max_tokens=max_tokens,
        temperature=temperature,
        top_p=top_p,
        top_k=top_k,
        repetition_penalty=repetition_penalty,
        seed=seed,
        stop=stop,
    )
    with Connection(model, verbose) as connection:
        if not raw and not connection.has_chat_template:
            # A base model (e.g. gemma-3-270m) was trained to continue text, not to answer turns.
            typer.echo(
                f"[{model} has no chat template (a base model): completing the prompt as plain text]",
                err=True,
            )
            connection.stream_reply(f"{system}\n\n{prompt}" if system else prompt, fields)
        elif raw:
            connection.stream_reply(prompt, fields)
        else:
            system_turn = [{"role": "system", "content": system}] if system else []
            connection.stream_reply([*system_turn, {"role": "user", "content": prompt}], fields)
