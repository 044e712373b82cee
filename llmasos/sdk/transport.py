"""The two ways a Client reaches a kernel: HTTP to a server, or an in-process kernel.

Both offer the same small set of operations, so `Client` has one implementation of each user-facing
method and no code is written twice for local and remote use.
"""

from __future__ import annotations

import base64
import contextlib
import json
import threading
from collections.abc import Iterator
from typing import Any, Protocol

import httpx

from llmasos.errors import InvalidRequestError, LLMasOSError, error_from_wire
from llmasos.sdk.stream import TextStream, usage_of


class Transport(Protocol):
    mode: str

    def generate(self, kind: str, model: str, payload: Any, params: dict, stream: bool) -> str | TextStream:
        """kind "chat" (payload: messages) or "completion" (payload: prompt)."""
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
    def models(self) -> list[dict]: ...
    def cancel(self, pid: int) -> dict: ...
    def close(self) -> None: ...


# ---- HTTP --------------------------------------------------------------------------------------


class HTTPTransport:
    mode = "http"

    def __init__(self, base_url: str, api_key: str | None, timeout: float) -> None:
        headers = {"Authorization": f"Bearer {api_key}"} if api_key else {}
        self.base_url = base_url.rstrip("/")
        self._http = httpx.Client(base_url=self.base_url, headers=headers, timeout=timeout)

    def _raise_for(self, response: httpx.Response) -> None:
        if response.is_success:
            return
        try:
            error = response.json()["error"]
            message, type_ = str(error.get("message")), error.get("type")
        except (ValueError, KeyError, TypeError, AttributeError):
            message, type_ = response.text[:500] or response.reason_phrase, None
        retry = float(response.headers.get("retry-after", "1") or 1)
        raise error_from_wire(type_, response.status_code, message, retry)

    def request(self, method: str, path: str, **kwargs: Any) -> Any:
        """One JSON request to the server, its errors raised as LLMasOS's (for sdk/data.py)."""
        return self._request(method, path, **kwargs)

    def _request(self, method: str, path: str, **kwargs: Any) -> Any:
        try:
            response = self._http.request(method, path, **kwargs)
        except httpx.HTTPError as err:
            raise LLMasOSError(f"cannot reach the LLMasOS server at {self.base_url}: {err}") from err
        self._raise_for(response)
        return response.json()

    def generate(self, kind: str, model: str, payload: Any, params: dict, stream: bool) -> str | TextStream:
        path, field = (
            ("/v1/chat/completions", "messages") if kind == "chat" else ("/v1/completions", "prompt")
        )
        body = {"model": model, field: payload, **params}
        if not stream:
            choice = self._request("POST", path, json=body)["choices"][0]
            return choice["message"]["content"] if kind == "chat" else choice["text"]
        body = {**body, "stream": True, "stream_options": {"include_usage": True}}
        return TextStream(lambda into: self._stream(path, body, kind, into))

    def _stream(self, path: str, body: dict, kind: str, into: TextStream) -> Iterator[str]:
        try:
            with self._http.stream("POST", path, json=body) as response:
                if not response.is_success:
                    response.read()
                    self._raise_for(response)
                pids = response.headers.get("x-llmasos-pids", "").split(",")
                into.pid = int(pids[0]) if pids[0].isdigit() else None
                for line in response.iter_lines():
                    if not line.startswith("data: "):
                        continue
                    data = line[len("data: ") :]
                    if data == "[DONE]":
                        return
                    chunk = json.loads(data)
                    if "error" in chunk:
                        e = chunk["error"]
                        raise error_from_wire(e.get("type"), 500, str(e.get("message")))
                    if chunk.get("usage"):
                        into.usage = chunk["usage"]
                    for choice in chunk.get("choices", []):
                        text = (
                            choice.get("delta", {}).get("content") if kind == "chat" else choice.get("text")
                        )
                        if text:
                            yield text
        except httpx.HTTPError as err:
            raise LLMasOSError(f"the stream from {self.base_url} broke: {err}") from err

    def preload(self, model: str) -> float | None:
        return None

    def call_service(self, name: str, input: Any, params: dict, model: str) -> dict:
        return self._request(
            "POST", f"/os/services/{name}", json={"input": input, "params": params, "model": model}
        )

    def ask(self, request: str, file: bytes | None, model: str) -> dict:
        body = {"request": request, "model": model}
        if file is not None:
            body["file_base64"] = base64.b64encode(file).decode("ascii")
        return self._request("POST", "/os/ask", json=body)

    def voice(self, wav: bytes, model: str) -> dict:
        body = {"audio_base64": base64.b64encode(wav).decode("ascii"), "model": model}
        return self._request("POST", "/os/voice", json=body)

    def embed(self, texts: list[str], model: str) -> list[list[float]]:
        data = self._request("POST", "/v1/embeddings", json={"model": model, "input": texts})["data"]
        return [d["embedding"] for d in sorted(data, key=lambda d: d["index"])]

    def ps(self) -> list[dict]:
        return self._request("GET", "/os/ps")["processes"]

    def models(self) -> list[dict]:
        return self._request("GET", "/os/models")["models"]

    def cancel(self, pid: int) -> dict:
        return self._request("DELETE", f"/os/tasks/{pid}")

    def close(self) -> None:
        self._http.close()


# ---- in-process --------------------------------------------------------------------------------


class LocalTransport:
    """A kernel in this process, started on first use, acting as the local admin app."""

    mode = "local"

    def __init__(self, interface: str = "sdk") -> None:
        self._interface = interface  # written into the audit rows of this kernel's calls
        self._lock = threading.Lock()
        self._syscalls = None
        self._app = None

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

    @staticmethod
    def _deltas(syscalls, app, process, into: TextStream) -> Iterator[str]:
        pid = process.pid
        finished = False
        try:
            for event in syscalls.events(app, pid):
                if event.finished:
                    finished = True
                    into.usage = usage_of(process.tokens_in, process.tokens_out)
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

    def models(self) -> list[dict]:
        from llmasos.library.store import ModelStore

        return [m.to_dict() for m in ModelStore().list()]

    def cancel(self, pid: int) -> dict:
        syscalls, app = self._kernel()
        return syscalls.describe(syscalls.cancel(app, pid))

    def close(self) -> None:
        with self._lock:
            if self._syscalls is not None:
                self._syscalls.stop()
                self._syscalls = None
