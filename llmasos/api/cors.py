"""Cross-origin requests: CORS, off unless the operator names origins (`llmasos serve --cors-origin`).

Browsers send a preflight `OPTIONS` with no key before a cross-origin call that carries one; it is
answered here, outside authentication, so a web app on an allowed origin can call the API with its
key. Keys travel in the `Authorization` header, not cookies, so credentials mode stays off. Origins
are exact (`http://localhost:3000`); `*` allows every page, which with a keyless server
(`--anonymous-app`) would let any site a user visits act as that app: the server says so at start.
"""

from __future__ import annotations

from collections.abc import Sequence

from fastapi import FastAPI
from starlette.middleware.cors import CORSMiddleware
from starlette.types import ASGIApp, Receive, Scope, Send

from llmasos.errors import InvalidRequestError
from llmasos.settings import origin_problem

#: How long a browser may cache a preflight answer, in seconds.
PREFLIGHT_MAX_AGE = 600


def check_origins(origins: Sequence[str]) -> tuple[str, ...]:
    """The origins as given, each `*` or `scheme://host[:port]` with no path (InvalidRequestError)."""
    for origin in origins:
        if (problem := origin_problem(origin)) is not None:
            raise InvalidRequestError(f"--cors-origin {problem}")
    return tuple(origins)


def install_cors(app: FastAPI, origins: Sequence[str]) -> None:
    """Answer preflights and add CORS headers for `origins`; nothing when there are none. Call it
    after every other middleware, so it wraps them all (a preflight carries no key)."""
    if not origins:
        return
    app.add_middleware(
        CORSMiddleware,
        allow_origins=list(origins),
        allow_methods=["GET", "POST", "DELETE", "OPTIONS"],
        allow_headers=["*"],
        expose_headers=["X-LLMasOS-Pids", "Retry-After"],
        allow_credentials=False,
        max_age=PREFLIGHT_MAX_AGE,
    )


class OllamaJsonBodyMiddleware:
    """Reads an Ollama route's body as JSON when it comes with no Content-Type and no Origin.

    Ollama parses every body as JSON, and some of its clients send none (litellm's `ollama_chat/`
    posts bare JSON); FastAPI refuses such bodies to stop cross-site requests, which browsers send
    without a preflight but always with an `Origin` header. A request with no Origin is not from a
    web page, so it is given `Content-Type: application/json`; one with an Origin is left as it is.
    """

    def __init__(self, app: ASGIApp, *, prefix: str) -> None:
        self.app = app
        self.prefix = prefix

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] == "http" and scope["method"] == "POST" and scope["path"].startswith(self.prefix):
            names = {name for name, _ in scope["headers"]}
            if b"content-type" not in names and b"origin" not in names:
                scope = {**scope, "headers": [*scope["headers"], (b"content-type", b"application/json")]}
        await self.app(scope, receive, send)
