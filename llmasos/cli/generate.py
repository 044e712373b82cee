"""`llmasos run` and `llmasos chat`: one streamed answer, or an interactive conversation.

The engine (and torch with it) is imported inside the commands, so that `llmasos models list`
and `--help` start in a fraction of a second.
"""

from __future__ import annotations

import sys
import time
from typing import TYPE_CHECKING, Annotated

import typer

from llmasos.config import DEFAULT_MODEL, EngineConfig

if TYPE_CHECKING:
    from llmasos.engine.engine import LLMEngine
    from llmasos.engine.sampling import SamplingParams

ModelOption = Annotated[str, typer.Option("--model", "-m", help="Model name or alias in the library.")]
MaxTokensOption = Annotated[int, typer.Option("--max-tokens", help="Most tokens to generate.")]
TemperatureOption = Annotated[
    float, typer.Option("--temperature", help="0 is greedy; higher is more varied.")
]
TopPOption = Annotated[float, typer.Option("--top-p", help="Nucleus sampling mass, (0, 1].")]
TopKOption = Annotated[int, typer.Option("--top-k", help="Sample among the k likeliest tokens; 0 disables.")]
RepetitionOption = Annotated[
    float, typer.Option("--repetition-penalty", help="Above 1 discourages repeating tokens.")
]
SeedOption = Annotated[int | None, typer.Option("--seed", help="Same seed, same output.")]
SystemOption = Annotated[str | None, typer.Option("--system", help="System prompt.")]
StopOption = Annotated[list[str] | None, typer.Option("--stop", help="Stop string (repeatable).")]


def _engine(model: str) -> LLMEngine:
    from llmasos.engine.engine import LLMEngine

    return LLMEngine.from_library(model, EngineConfig())


def _sampling(
    max_tokens: int,
    temperature: float,
    top_p: float,
    top_k: int,
    repetition_penalty: float,
    seed: int | None,
    stop: list[str] | None,
) -> SamplingParams:
    from llmasos.engine.sampling import SamplingParams

    return SamplingParams(
        max_tokens=max_tokens,
        temperature=temperature,
        top_p=top_p,
        top_k=top_k,
        repetition_penalty=repetition_penalty,
        seed=seed,
        stop=tuple(stop or ()),
    )


def _stream_reply(engine: LLMEngine, prompt_ids: list[int], params: SamplingParams, verbose: bool) -> str:
    start = time.perf_counter()
    first_token_at = None
    reply, n = "", 0
    for output in engine.stream(prompt_ids, params):
        if first_token_at is None:
            first_token_at = time.perf_counter()
        sys.stdout.write(output.text)
        sys.stdout.flush()
        reply += output.text
        n = output.num_output_tokens
    sys.stdout.write("\n")
    if verbose and first_token_at is not None:
        decode_s = time.perf_counter() - first_token_at
        rate = (n - 1) / decode_s if n > 1 and decode_s > 0 else 0.0
        typer.echo(
            f"[{len(prompt_ids)} prompt tokens, {n} generated; first token "
            f"{(first_token_at - start) * 1000:.0f} ms; {rate:.1f} tok/s]",
            err=True,
        )
    return reply


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
    verbose: Annotated[
        bool, typer.Option("--verbose", "-v", help="Print token counts and speed to stderr.")
    ] = False,
) -> None:
    """One answer from a model, streamed to stdout."""
    if prompt == "-":
        prompt = sys.stdin.read()
    params = _sampling(max_tokens, temperature, top_p, top_k, repetition_penalty, seed, stop)
    engine = _engine(model)
    if raw:
        prompt_ids = engine.tokenizer.encode(prompt)
    else:
        messages = ([{"role": "system", "content": system}] if system else []) + [
            {"role": "user", "content": prompt}
        ]
        prompt_ids = engine.tokenizer.encode_chat(messages)
    _stream_reply(engine, prompt_ids, params, verbose)


def chat(
    model: ModelOption = DEFAULT_MODEL,
    max_tokens: MaxTokensOption = 512,
    temperature: TemperatureOption = 0.7,
    top_p: TopPOption = 0.9,
    seed: SeedOption = None,
    system: SystemOption = None,
    verbose: Annotated[bool, typer.Option("--verbose", "-v", help="Print token counts and speed.")] = False,
) -> None:
    """Talk with a model. /reset forgets the conversation; /exit or Ctrl-D leaves."""
    params = _sampling(max_tokens, temperature, top_p, 0, 1.0, seed, None)
    engine = _engine(model)
    base = [{"role": "system", "content": system}] if system else []
    messages = list(base)
    typer.echo(f"Chatting with {model}. /reset to start over, /exit to leave.", err=True)
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
        prompt_ids = engine.tokenizer.encode_chat(messages)
        if len(prompt_ids) >= engine.context_length:
            typer.echo("The conversation no longer fits the context window; /reset to start over.", err=True)
            messages.pop()
            continue
        reply = _stream_reply(engine, prompt_ids, params, verbose)
        messages.append({"role": "assistant", "content": reply})
