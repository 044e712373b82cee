"""What the HTTP door admits before any work: body size, trusted hosts, failed-authentication limits.

The order of checks on a request (outermost first): the Host header, when keyless requests are
served; the key, from the headers alone (`auth.py`); a body declared larger than the limit; and
only then does a route read the body, its bytes counted as they come (413 past the limit).
"""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass, field
from urllib.parse import urlsplit

from fastapi import FastAPI, Request
from fastapi.responses import JSONResponse
from starlette.datastructures import Headers
from starlette.exceptions import HTTPException as StarletteHTTPException
from starlette.middleware.body_limit import RequestBodyLimitMiddleware
from starlette.types import ASGIApp, Receive, Scope, Send

from llmasos.api.auth_guard import FailedAuthPolicy
from llmasos.api.errors import error_body, error_response
from llmasos.api.request_rate import RequestRatePolicy
from llmasos.errors import LLMasOSError

#: Host names a keyless server always answers: loopback spelled every way browsers and clients do.
LOOPBACK_HOSTS = ("localhost", "127.0.0.1", "::1")


@dataclass(frozen=True)
class HttpLimits:
    """Bounds on what one request may make the server do before it is refused."""

    # Bytes of one request body. 8 MiB holds any prompt a local model's context can take many
    # times over (SmolLM2's 8,192 tokens are ~40 KB of text) and a few minutes of WAV as base64;
    # a 50 MB prompt once took the server to 8 GB.
    max_body_bytes: int = 8 * 2**20
    # Host header names accepted besides loopback when keyless requests are served (DNS rebinding:
    # a web page's script can reach a loopback server only under a name the attacker controls).
    trusted_hosts: tuple[str, ...] = ()
    # Whether to check the Host header at all; None: exactly when keyless requests are served (with
    # keys, a rebinding page has nothing to send).
    check_hosts: bool | None = None
    failed_auth: FailedAuthPolicy = field(default_factory=FailedAuthPolicy)
    # Requests an app may start (api/request_rate.py); the default limits none but apps that set a rate
    # (`llmasos serve` passes its generous server-wide default).
    request_rate: RequestRatePolicy = field(default_factory=RequestRatePolicy)
    # Origins whose web pages may call the API (CORS, `api/cors.py`); none: browsers' same-origin rule.
    cors_origins: tuple[str, ...] = ()


def closing_if_body_unread(response: JSONResponse, scope: Scope) -> JSONResponse:
    """`response`, marked to close the connection when the request declared a body that is answered
    before it is read. Kept open, the server must read the rest to find the next request: a 30 MB
    body refused at once still cost 30 MB of reading in the event loop (benchmarks/abuse.py)."""
    headers = Headers(scope=scope)
    declared = headers.get("content-length", "0")
    if "transfer-encoding" in headers or not declared.isdigit() or int(declared) > 0:
        response.headers["connection"] = "close"
    return response


def host_of(header: str | None) -> str | None:
    """The host name of a Host header (`[::1]:8080` -> `::1`), lowercased; None if malformed."""
    if not header:
        return None
    try:
        host = urlsplit(f"//{header}").hostname
    except ValueError:
        return None
    return host.lower() if host else None


class TrustedHostMiddleware:
    """Refuses (400) requests whose Host header names none of `hosts`: Starlette's
    TrustedHostMiddleware, answering in the API's error shape and saying what to do."""

    def __init__(self, app: ASGIApp, *, hosts: Iterable[str]) -> None:
        self.app = app
        self.hosts = frozenset(h.lower().strip("[]") for h in hosts)

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] in ("http", "websocket"):
            host = host_of(Headers(scope=scope).get("host"))
            if host not in self.hosts:
                body = error_body(
                    f"this server answers only requests addressed to {', '.join(sorted(self.hosts))}, "
                    f"not {host or 'a missing or malformed Host'}; an operator can add a name with "
                    "`llmasos serve --trusted-host NAME`",
                    "invalid_request_error",
                    "untrusted_host",
                )
                await closing_if_body_unread(JSONResponse(body, 400), scope)(scope, receive, send)
                return
        await self.app(scope, receive, send)


class BodyLimitMiddleware(RequestBodyLimitMiddleware):
    """Starlette's body limit (bytes counted as they are read; 413 past the limit, whether or not a
    Content-Length was sent, or was honest), answering a body declared too large at once and in the
    API's error shape."""

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] == "http":
            declared = Headers(scope=scope).get("content-length", "")
            if declared.isdigit() and int(declared) > self.max_body_size:
                await closing_if_body_unread(too_large(self.max_body_size), scope)(scope, receive, send)
                return
        await super().__call__(scope, receive, send)


def too_large(limit: int) -> JSONResponse:
    message = (
        f"the request body is larger than this server's limit of {limit} bytes; send less "
        "(an operator can raise it with `llmasos serve --max-body-size`)"
    )
    return JSONResponse(error_body(message, "invalid_request_error", "request_too_large"), 413)


def install_body_limit(app: FastAPI, limit: int) -> None:
    """Count body bytes as routes read them (innermost of the middleware: after the key is checked)
    and answer the limit's 413 in the API's shape."""
    app.add_middleware(BodyLimitMiddleware, max_body_size=limit)

    @app.exception_handler(413)
    async def _too_large(request: Request, err: StarletteHTTPException) -> JSONResponse:
        error = getattr(err, "error", None)  # upload_quota.UploadOverQuota: the app's quota, not ours
        if isinstance(error, LLMasOSError):
            return closing_if_body_unread(error_response(error), request.scope)
        return closing_if_body_unread(too_large(limit), request.scope)  # the rest of it is unread
