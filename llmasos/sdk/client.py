"""The Python SDK: `llmasos.Client()` and `llmasos.AsyncClient()`.

    import llmasos
    client = llmasos.Client()      # the local server if one runs, else an in-process kernel
    print(client.call("summarize", text))
    for delta in client.chat([{"role": "user", "content": "Hi"}], stream=True):
        print(delta, end="")

`Client(base_url=..., api_key=...)` talks to a remote server, trying a request again on 429, 503
and connection errors (`max_retries`, default 2, honouring `Retry-After`). `chat()` returns the
reply's text; `chat_completion()` returns a `ChatCompletion` with its text, finish reason, usage
and tool calls. The key may also come from
`LLMASOS_API_KEY`; for the local server the admin key under `$LLMASOS_HOME` is used.
"""

from __future__ import annotations

import asyncio
import os
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import httpx

from llmasos.errors import ServerUnavailableError
from llmasos.sdk.conversations import Conversations
from llmasos.sdk.data import KV, Docs, export_app
from llmasos.sdk.discovery import read_server_file
from llmasos.sdk.results import ChatCompletion
from llmasos.sdk.retries import RetryPolicy
from llmasos.sdk.stream import TextStream
from llmasos.sdk.transport import HTTPTransport, LocalTransport, Transport
from llmasos.sdk.workflows import Workflows
from llmasos.security.admin import read_admin_key

DEFAULT_TIMEOUT = 600.0

#: Probing the server named in server.json: a server that is gone refuses the connection at once
#: (loopback), but one that is there may be slow to answer on a busy machine. A 2 s limit on the
#: whole probe once made a client run in-process beside a live, loaded server.
PROBE_TIMEOUT = httpx.Timeout(15.0, connect=2.0)


def _local_server_url() -> str | None:
    info = read_server_file()
    if info is None:
        return None
    try:
        ok = httpx.get(info["url"] + "/healthz", timeout=PROBE_TIMEOUT).is_success
    except httpx.HTTPError:
        ok = False
    return info["url"] if ok else None


class Client:
    """A connection to LLMasOS: HTTP to a server, or a kernel inside this process."""

    def __init__(
        self,
        base_url: str | None = None,
        api_key: str | None = None,
        *,
        model: str = "default",
        timeout: float = DEFAULT_TIMEOUT,
        local: bool | None = None,
        interface: str = "sdk",
        max_retries: int = 2,
    ) -> None:
        """`local=True` forces an in-process kernel, `local=False` requires a server. `interface`
        names the caller in an in-process kernel's audit rows (`llmasos run` passes "cli").
        `max_retries`: tries after the first on 429/503 or a connection error, with exponential
        backoff or the server's `Retry-After` (up to 60 s; a longer one is raised at once)."""
        self.model = model
        api_key = api_key or os.environ.get("LLMASOS_API_KEY")
        if base_url is None and local is not True:
            base_url = _local_server_url()
            if base_url is not None:
                api_key = api_key or read_admin_key()
            elif local is False:
                raise ServerUnavailableError(
                    "no LLMasOS server is running here; start one with `llmasos serve`"
                )
        self._transport: Transport = (
            HTTPTransport(base_url, api_key, timeout, RetryPolicy(max_retries=max_retries))
            if base_url is not None
            else LocalTransport(interface)
        )
        self._workflows: Workflows | None = None
        self.docs = Docs(self._transport)  # the app's documents: vector stores with hybrid search
        self.kv = KV(self._transport)  # the app's key-value store
        self.conversations = Conversations(self._transport)  # server-side conversations with memory

    @property
    def workflows(self) -> Workflows:
        """Workflows: define, validate, run; follow, approve, cancel and resume runs."""
        if self._workflows is None:
            self._workflows = Workflows(self._transport)
        return self._workflows

    @property
    def mode(self) -> str:
        """ "http" or "local"."""
        return self._transport.mode

    @property
    def base_url(self) -> str | None:
        """The server's URL; None for an in-process kernel."""
        return getattr(self._transport, "base_url", None)

    def preload(self, model: str | None = None) -> float | None:
        """Load the model now, so that the first answer does not wait for it: the seconds it took
        in an in-process kernel; None with a server, which loads models when first asked."""
        return self._transport.preload(model or self.model)

    def call(self, service: str, input: Any, *, model: str | None = None, **params: Any) -> Any:
        """Run a system service (summarize, translate, qa, code, classify, extract, chat) and return
        its output; `call_full` also returns usage and details."""
        return self.call_full(service, input, model=model, **params)["output"]

    def call_full(self, service: str, input: Any, *, model: str | None = None, **params: Any) -> dict:
        return self._transport.call_service(service, input, params, model or self.model)

    def ask(self, request: str, *, file: str | bytes | None = None, model: str | None = None) -> dict:
        """Route a plain-language request (with an image or WAV file, a path or bytes) to the right
        service or tool and run it: {"answer", "route" (target, scores, reasons), "steps", "usage"}."""
        data = Path(file).read_bytes() if isinstance(file, str) else file
        return self._transport.ask(request, data, model or self.model)

    def voice(self, wav: str | bytes, *, model: str | None = None) -> dict:
        """A spoken question (WAV path or bytes) -> {"transcript", "answer", "audio_base64" (WAV), ...}."""
        data = Path(wav).read_bytes() if isinstance(wav, str) else wav
        return self._transport.voice(data, model or self.model)

    def chat(
        self,
        messages: list[dict],
        *,
        model: str | None = None,
        stream: bool = False,
        conversation: str | None = None,
        **sampling: Any,
    ) -> str | TextStream:
        """The assistant's reply to `messages`, or an iterator of text deltas with `stream=True`
        (a `TextStream`: once read, its `pid` and `usage` say which process answered and what it
        computed). Sampling: max_tokens, temperature, top_p, top_k, seed, stop, repetition_penalty,
        priority (a lower class). With `conversation` (an id from `client.conversations.create()`),
        `messages` are the new turn only: the system keeps the history and assembles the context."""
        if conversation is not None:
            if stream:
                return self.conversations.stream(model or self.model, messages, conversation, dict(sampling))
            return self.conversations.respond(model or self.model, messages, conversation, dict(sampling))
        return self._transport.generate("chat", model or self.model, messages, sampling, stream)

    def chat_completion(
        self, messages: list[dict], *, model: str | None = None, stream: bool = False, **fields: Any
    ) -> ChatCompletion | TextStream:
        """The reply to `messages` as a `ChatCompletion`: `.text`, `.finish_reason`, `.usage`,
        `.tool_calls` (OpenAI's shape) and `.pid`. `fields` are the sampling fields of `chat()` and,
        with a server, any other OpenAI chat field (`tools`, `tool_choice`, `response_format`,
        `logprobs`, ...; the whole reply is in `.raw`). With `stream=True`, a `TextStream` of text
        deltas whose `finish_reason`, `usage` and `tool_calls` are known once it is read."""
        return self._transport.chat_completion(model or self.model, messages, fields, stream)

    def complete(
        self, prompt: str, *, model: str | None = None, stream: bool = False, **sampling: Any
    ) -> str | TextStream:
        """A plain completion of `prompt` (no chat template)."""
        return self._transport.generate("completion", model or self.model, prompt, sampling, stream)

    def embed(self, texts: str | list[str], *, model: str = "all-minilm-l6-v2") -> list[list[float]]:
        """Sentence embeddings (L2-normalized) of one text or a list."""
        return self._transport.embed([texts] if isinstance(texts, str) else list(texts), model)

    def export(self, app: str, folder: str | Path) -> dict:
        """App `app`'s data (your own; any app's with the admin key) written into `folder`, new or
        empty: files (with their original bytes), vector stores, chunks, conversations, responses,
        key-value data and knowledge triples as JSON lines; returns the manifest."""
        return export_app(self._transport, app, folder)

    def ps(self) -> list[dict]:
        return self._transport.ps()

    def nodes(self) -> list[dict]:
        """The cluster's nodes (admin key; empty when the server runs on one box)."""
        return self._transport.nodes()

    def models(self) -> list[dict]:
        return self._transport.models()

    def cancel(self, pid: int) -> dict:
        return self._transport.cancel(pid)

    def close(self) -> None:
        self._transport.close()

    def __enter__(self) -> Client:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()


class AsyncClient:
    """`Client` for asyncio code: each call runs the sync client in a worker thread, so the two
    never drift apart; streams are handed over through a queue."""

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        self._sync = Client(*args, **kwargs)

    @property
    def mode(self) -> str:
        return self._sync.mode

    async def call(self, service: str, input: Any, **params: Any) -> Any:
        return await asyncio.to_thread(self._sync.call, service, input, **params)

    async def chat(
        self, messages: list[dict], *, stream: bool = False, **kwargs: Any
    ) -> str | AsyncIterator[str]:
        if stream:
            return _iterate_in_thread(lambda: self._sync.chat(messages, stream=True, **kwargs))
        return await asyncio.to_thread(self._sync.chat, messages, **kwargs)

    async def chat_completion(
        self, messages: list[dict], *, stream: bool = False, **kwargs: Any
    ) -> ChatCompletion | AsyncIterator[str]:
        if stream:
            return _iterate_in_thread(lambda: self._sync.chat_completion(messages, stream=True, **kwargs))
        return await asyncio.to_thread(self._sync.chat_completion, messages, **kwargs)

    async def complete(self, prompt: str, *, stream: bool = False, **kwargs: Any) -> str | AsyncIterator[str]:
        if stream:
            return _iterate_in_thread(lambda: self._sync.complete(prompt, stream=True, **kwargs))
        return await asyncio.to_thread(self._sync.complete, prompt, **kwargs)

    async def ask(self, request: str, **kwargs: Any) -> dict:
        return await asyncio.to_thread(self._sync.ask, request, **kwargs)

    async def embed(self, texts: str | list[str], **kwargs: Any) -> list[list[float]]:
        return await asyncio.to_thread(self._sync.embed, texts, **kwargs)

    async def ps(self) -> list[dict]:
        return await asyncio.to_thread(self._sync.ps)

    async def cancel(self, pid: int) -> dict:
        return await asyncio.to_thread(self._sync.cancel, pid)

    async def close(self) -> None:
        await asyncio.to_thread(self._sync.close)

    async def __aenter__(self) -> AsyncClient:
        return self

    async def __aexit__(self, *exc: object) -> None:
        await self.close()


_END = object()


async def _iterate_in_thread(make: Any) -> AsyncIterator[str]:
    """Run a blocking iterator in a thread and yield its items here; closing early stops it."""
    loop = asyncio.get_running_loop()
    queue: asyncio.Queue = asyncio.Queue()
    stop = False

    def pump() -> None:
        iterator = make()
        try:
            for item in iterator:
                if stop:
                    break
                loop.call_soon_threadsafe(queue.put_nowait, item)
        except BaseException as err:  # handed to the reader, raised there
            loop.call_soon_threadsafe(queue.put_nowait, err)
        finally:
            close = getattr(iterator, "close", None)
            if close is not None:
                close()
            loop.call_soon_threadsafe(queue.put_nowait, _END)

    task = loop.run_in_executor(None, pump)
    try:
        while (item := await queue.get()) is not _END:
            if isinstance(item, BaseException):
                raise item
            yield item
    finally:
        stop = True
        await task
