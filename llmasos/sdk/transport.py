"""The two ways a Client reaches a kernel: HTTP to a server, or an in-process kernel.

Both offer the same small set of operations, so `Client` has one implementation of each user-facing
method and no code is written twice for local and remote use.
"""

from __future__ import annotations

import base64
import contextlib
import threading
from collections.abc import Iterator
from typing import Any, Protocol

from llmasos.errors import InvalidRequestError, LLMasOSError
from llmasos.sdk.http import HTTPTransport
from llmasos.sdk.results import ChatCompletion
from llmasos.sdk.stream import TextStream, usage_of

__all__ = ["HTTPTransport", "LocalTransport", "Transport"]


class Transport(Protocol):
    mode: str

    def generate(self, kind: str, model: str, payload: Any, params: dict, stream: bool) -> str | TextStream:
        """kind "chat" (payload: messages) or "completion" (payload: prompt)."""
        ...

    def chat_completion(
        self, model: str, messages: list[dict], params: dict, stream: bool
    ) -> ChatCompletion | TextStream:
        """The reply with its finish reason, usage and tool calls (a TextStream that learns them as
        it is read, with `stream`)."""
        ...

    def preload(self, model: str) -> float | None:
        """Load `model` now if this transport owns the kernel: the seconds it took; None for a
        server, which loads models itself."""
        ...

    def call_service(self, name: str, input: Any, params: dict, model: str) -> dict: ...
    def ask(self, request: str, file: bytes | None, model: str) -> dict: ...
    def voice(self, wav: bytes, model: str) -> dict: ...
    def embed(self, texts: list[str], model: str) -> list[list[float]]: ...
    def ps(self) -> list[dict]: ...
    def nodes(self) -> list[dict]: ...
    def models(self) -> list[dict]: ...
    def cancel(self, pid: int) -> dict: ...
    def close(self) -> None: ...


# ---- in-process --------------------------------------------------------------------------------


class LocalTransport:
    """A kernel in this process, started on first use, acting as the local admin app."""

    mode = "local"

    def __init__(self, interface: str = "sdk") -> None:
        self._interface = interface  # written into the audit rows of this kernel's calls
        self._lock = threading.Lock()
        self._syscalls = None
        self._app = None

    def system_calls(self):
        """(syscalls, app) of the in-process kernel, booted on first use (workflows run over it)."""
        return self._kernel()

    def _kernel(self):
        with self._lock:
            if self._syscalls is None:
                from llmasos.kernel.boot import boot_as_admin

                self._syscalls, self._app = boot_as_admin(self._interface)
            return self._syscalls, self._app

    def data_calls(self):
        """(system calls, the local admin app): the in-process kernel, started on first use, with
        the embedding model that each app's documents need (for sdk/data.py)."""
        from llmasos.tools.embed import load_embedder

        syscalls, app = self._kernel()
        syscalls.use_embedder(load_embedder, replace=False)
        return syscalls, app

    def generate(self, kind: str, model: str, payload: Any, params: dict, stream: bool) -> str | TextStream:
        from llmasos.kernel.sampling_request import SAMPLING_FIELDS, sampling_params

        syscalls, app = self._kernel()
        params = dict(params)
        priority = params.pop("priority", None)
        unknown = sorted(set(params) - SAMPLING_FIELDS)
        if unknown:  # a server ignores unknown fields; here a misspelled one is named instead
            raise InvalidRequestError(
                f"unknown sampling parameter {', '.join(unknown)}; "
                f"known: {', '.join(sorted(SAMPLING_FIELDS))}"
            )
        sampling = sampling_params(params)
        if kind == "chat":
            process = syscalls.chat(app, model, payload, sampling, priority=priority)
        else:
            process = syscalls.generate(app, model, payload, sampling, priority=priority)
        deltas = TextStream(lambda into: self._deltas(syscalls, app, process, into))
        deltas.pid = process.pid
        return deltas if stream else "".join(deltas)

    def chat_completion(
        self, model: str, messages: list[dict], params: dict, stream: bool
    ) -> ChatCompletion | TextStream:
        if params.get("tools") or params.get("tool_choice"):
            raise InvalidRequestError(
                "tools need a server: tool calling runs in `llmasos serve`; "
                "use llmasos.Client(base_url=...) or start one"
            )
        deltas = self.generate("chat", model, messages, params, stream=True)
        assert isinstance(deltas, TextStream)
        if stream:
            return deltas
        text = "".join(deltas)
        return ChatCompletion(text, deltas.finish_reason, deltas.usage, [], deltas.pid)

    @staticmethod
    def _deltas(syscalls, app, process, into: TextStream) -> Iterator[str]:
        pid = process.pid
        finished = False
        try:
            for event in syscalls.events(app, pid):
                if event.finished:
                    finished = True
                    into.usage = usage_of(process.tokens_in, process.tokens_out)
                    into.finish_reason = event.finish_reason
                    if event.error is not None:
                        raise event.error
                    return
                if event.text:
                    yield event.text
        finally:
            if not finished:  # the caller stopped reading: give the engine back at once
                with contextlib.suppress(LLMasOSError):
                    syscalls.cancel(app, pid, reason="the reader stopped")

    def preload(self, model: str) -> float | None:
        syscalls, app = self._kernel()
        return syscalls.preload(app, model)

    def call_service(self, name: str, input: Any, params: dict, model: str) -> dict:
        from llmasos.programs import default_registry

        syscalls, app = self._kernel()
        result = default_registry().run(syscalls, app, name, input, params, model=model)
        return {"output": result.output, "usage": result.usage, "details": result.details}

    def ask(self, request: str, file: bytes | None, model: str) -> dict:
        from llmasos.router.ask import ask

        syscalls, app = self._kernel()
        return ask(syscalls, app, request, attachment=file, model=model).to_dict()

    def voice(self, wav: bytes, model: str) -> dict:
        from llmasos.router.ask import voice

        syscalls, app = self._kernel()
        reply = voice(syscalls, app, wav, model=model)
        return {
            "transcript": reply.transcript,
            **reply.answer.to_dict(),
            "audio_base64": base64.b64encode(reply.audio).decode("ascii"),
        }

    def embed(self, texts: list[str], model: str) -> list[list[float]]:
        from llmasos.tools.embed import load_embedder

        syscalls, app = self._kernel()
        return syscalls.invoke(app, "model", model, lambda: load_embedder().embed(texts)[0], call="embed")

    def ps(self) -> list[dict]:
        syscalls, app = self._kernel()
        return syscalls.ps(app)

    def nodes(self) -> list[dict]:
        syscalls, app = self._kernel()
        return syscalls.nodes(app)

    def models(self) -> list[dict]:
        from llmasos.library.store import ModelStore

        return [m.to_dict() for m in ModelStore().list()]

    def cancel(self, pid: int) -> dict:
        syscalls, app = self._kernel()
        return syscalls.describe(syscalls.cancel(app, pid))

    def close(self) -> None:
        with self._lock:
            if self._syscalls is not None:
                # Stopped, not closed: a workflow run this client started in-process goes on in its
                # threads after the client closes, and needs the kernel's stores open.
                self._syscalls.stop()
                self._syscalls = None
