"""`llmasos run` and `llmasos chat`: one streamed answer, or an interactive conversation.

Both are system calls of the local admin app on a kernel in this process, like the SDK's local
mode: checked, scheduled and written to the audit log as any other interface's calls are. The
kernel (and torch with it) is imported inside the commands, so that `llmasos models list` and
`--help` start in a fraction of a second.
"""

from __future__ import annotations

import sys
import time
from typing import TYPE_CHECKING, Annotated

import typer

from llmasos.config import DEFAULT_MODEL

if TYPE_CHECKING:
    from llmasos.engine.sampling import SamplingParams
    from llmasos.kernel.syscalls import Syscalls
    from llmasos.security.apps import App

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


class _Session:
    """The kernel in this process and the admin app the commands act as."""

    def __init__(self, model: str) -> None:
        from llmasos.kernel.boot import boot_as_admin

        self.model = model
        self.syscalls: Syscalls
        self.app: App
        self.syscalls, self.app = boot_as_admin("cli")
        # Loaded before the first prompt, so that time to first token is the model's, not the load's.
        start = time.perf_counter()
        try:
            name = self.syscalls.allowed_model(self.app, model)
            residency = self.syscalls.kernel.residency
            residency.acquire(name)
            residency.release(name)
        except BaseException:
            self.close()
            raise
        self.load_seconds = time.perf_counter() - start

    def close(self) -> None:
        self.syscalls.kernel.stop()


def _sampling(
    max_tokens: int,
    temperature: float,
    top_p: float,
    top_k: int,
    repetition_penalty: float,
    seed: int | None,
    stop: list[str] | None,
) -> SamplingParams:
    from llmasos.kernel.sampling_request import sampling_params

    return sampling_params(
        {
            "max_tokens": max_tokens,
            "temperature": temperature,
            "top_p": top_p,
            "top_k": top_k,
            "repetition_penalty": repetition_penalty,
            "seed": seed,
            "stop": stop,
        }
    )


def _stream_reply(session: _Session, prompt: str | list[dict], params: SamplingParams, verbose: bool) -> str:
    """Stream the answer to `prompt` (raw text) or chat messages to stdout; the whole answer."""
    start = time.perf_counter()
    if isinstance(prompt, str):
        process = session.syscalls.generate(session.app, session.model, prompt, params)
    else:
        process = session.syscalls.chat(session.app, session.model, prompt, params)
    first_token_at = None
    reply, n = "", 0
    for event in session.syscalls.events(session.app, process.pid):
        if event.error is not None:
            raise event.error
        if event.token_ids and first_token_at is None:
            first_token_at = time.perf_counter()
        n += len(event.token_ids)
        if event.text:
            sys.stdout.write(event.text)
            sys.stdout.flush()
            reply += event.text
    sys.stdout.write("\n")
    if verbose and first_token_at is not None:
        decode_s = time.perf_counter() - first_token_at
        rate = (n - 1) / decode_s if n > 1 and decode_s > 0 else 0.0
        typer.echo(
            f"[{process.tokens_in} prompt tokens, {n} generated; first token "
            f"{(first_token_at - start) * 1000:.0f} ms; {rate:.1f} tok/s; pid {process.pid}]",
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
    session = _Session(model)
    if verbose:
        typer.echo(f"[{session.model} ready in {session.load_seconds:.1f} s]", err=True)
    try:
        if raw:
            _stream_reply(session, prompt, params, verbose)
        else:
            system_turn = [{"role": "system", "content": system}] if system else []
            _stream_reply(session, [*system_turn, {"role": "user", "content": prompt}], params, verbose)
    finally:
        session.close()


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
    session = _Session(model)
    try:
        _converse(session, params, system, verbose)
    finally:
        session.close()


def _converse(session: _Session, params: SamplingParams, system: str | None, verbose: bool) -> None:
    from llmasos.errors import ContextWindowExceededError

    model = session.model
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
        try:
            reply = _stream_reply(session, messages, params, verbose)
        except ContextWindowExceededError:
            typer.echo("The conversation no longer fits the context window; /reset to start over.", err=True)
            messages.pop()
            continue
        messages.append({"role": "assistant", "content": reply})
