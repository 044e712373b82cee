"""What `llmasos run` and `llmasos chat` share: their options, the connection they answer through, and
one reply streamed to stdout.

Both go through the SDK. When `llmasos serve` runs under the same $LLMASOS_HOME they are requests to
it, as the local admin app (its key is under $LLMASOS_HOME): their processes show in the server's
`llmasos ps` and audit log, and no second copy of the model is loaded. Otherwise they are system calls
of the same admin app on a kernel in this process, audited with the interface "cli". Nothing heavy is
imported until a command runs (and nothing of the kernel or torch when a server answers), so
`llmasos models list` and `--help` start in a fraction of a second.
"""

from __future__ import annotations

import sys
import time
from collections.abc import Iterator
from contextlib import ExitStack, contextmanager
from typing import TYPE_CHECKING, Annotated, Any

import typer
from rich.console import Console

from llmasos.errors import LLMasOSError

if TYPE_CHECKING:
    from llmasos.sdk.client import Client

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
VerboseOption = Annotated[
    bool, typer.Option("--verbose", "-v", help="Print where it runs, token counts and speed to stderr.")
]


def sampling_fields(**options: Any) -> dict[str, Any]:
    """The options a user gave, under the request field names (`max_tokens`, `top_p`, `stop`, ...)
    that the kernel's `sampling_params` and the HTTP API read; unset ones are left out."""
    return {name: value for name, value in options.items() if value is not None}


@contextmanager
def spinner(what: str) -> Iterator[None]:
    """A spinner on stderr saying `what` while the block runs, in a terminal only (never in a pipe)."""
    console = Console(stderr=True)
    if not console.is_terminal:
        yield
        return
    with console.status(what, spinner="dots"):
        yield


def _has_chat_template(client: Any, model: str) -> bool:
    """Whether the library's manifest of `model` says it has a chat template (True when unknown)."""
    from llmasos.library.catalog import resolve_alias

    name = resolve_alias(model).lower()
    try:
        manifest = next((m for m in client.models() if m["name"] == name), None)
    except LLMasOSError:
        return True  # e.g. a key without the right to list models: let the server decide as before
    return True if manifest is None else bool(manifest.get("has_chat_template", True))


class Connection:
    """The SDK client that answers, opened for one command: the server's, or this process's kernel."""

    def __init__(self, model: str, verbose: bool) -> None:
        from llmasos.sdk.client import Client

        self.model = model
        self.verbose = verbose
        self.client: Client = Client(model=model, interface="cli")
        try:
            if self.client.mode == "http":
                where = f"answering through the server at {self.client.base_url}"
            else:
                # Loaded before the first prompt, so that time to first token is the model's, not the load's.
                with spinner(f"loading {model}..."):
                    seconds = self.client.preload(model)
                where = f"{model} ready in {seconds:.1f} s, in this process (no server runs)"
        except BaseException:
            self.client.close()
            raise
        if verbose:
            typer.echo(f"[{where}]", err=True)
        #: False for a base model, which brings no chat template (run completes its prompt as plain text).
        self.has_chat_template = _has_chat_template(self.client, model)
        #: Why the last reply stopped before its end: "interrupted", "token limit", or None.
        self.stopped: str | None = None

    def __enter__(self) -> Connection:
        return self

    def __exit__(self, *exc: object) -> None:
        self.client.close()

    def stream_reply(
        self, prompt: str | list[dict], fields: dict[str, Any], *, stop_on_interrupt: bool = False
    ) -> str:
        """Stream the answer to `prompt` (raw text) or chat messages to stdout; the answer, whole or as
        far as it came. Leaving early (Ctrl-C, an error) closes the stream, which cancels the process;
        with `stop_on_interrupt`, Ctrl-C ends only this answer (`stopped` says so) instead of the command."""
        start = time.perf_counter()
        self.stopped = None
        first_token_at = None
        reply = ""
        stream = None
        waiting = ExitStack()  # a spinner until the first token: a model may be loading on the server
        waiting.enter_context(spinner("..."))
        try:
            if isinstance(prompt, str):
                stream = self.client.complete(prompt, stream=True, **fields)
            else:
                stream = self.client.chat(prompt, stream=True, **fields)
            for text in stream:
                if first_token_at is None:
                    first_token_at = time.perf_counter()
                    waiting.close()
                sys.stdout.write(text)
                sys.stdout.flush()
                reply += text
        except KeyboardInterrupt:
            if not stop_on_interrupt:
                raise
            self.stopped = "interrupted"
        finally:
            waiting.close()
            if stream is not None:
                stream.close()
        sys.stdout.write("\n")
        usage = stream.usage if stream is not None else None
        if usage is not None and usage["completion_tokens"] >= fields.get("max_tokens", float("inf")):
            self.stopped = "token limit"
        if self.verbose and usage is not None and first_token_at is not None:
            n = usage["completion_tokens"]
            decode_s = time.perf_counter() - first_token_at
            rate = (n - 1) / decode_s if n > 1 and decode_s > 0 else 0.0
            typer.echo(
                f"[{usage['prompt_tokens']} prompt tokens, {n} generated; first token "
                f"{(first_token_at - start) * 1000:.0f} ms; {rate:.1f} tok/s; pid {stream.pid}]",
                err=True,
            )
        return reply
