"""Authentication: the bearer key names the app; every route receives that app as its caller.

The key is checked by `AuthenticationMiddleware` from the request's headers alone, before any route
reads the body: a request without a valid key is answered 401 without its body being read or parsed
(eight parallel 30 MB bodies with no key once took the server from 261 MB to 1,973 MB, each only to
be told 401). Failed checks are limited per client address (`auth_guard.py`). Routes take the
authenticated app through the `Caller` and `Admin` parameter types.
"""

from __future__ import annotations

import asyncio
import contextlib
import re
from collections.abc import AsyncIterator, Sequence
from typing import Annotated

import fastapi.routing
from fastapi import Depends, Request
from starlette.concurrency import run_in_threadpool
from starlette.datastructures import Headers
from starlette.routing import BaseRoute, compile_path
from starlette.types import ASGIApp, Receive, Scope, Send

from llmasos.api.auth_guard import FailedAuthGuard, FailureSummary
from llmasos.api.errors import OLLAMA_PREFIX, error_response
from llmasos.api.limits import closing_if_body_unread
from llmasos.api.request_rate import RATE_LIMITED_CALL, RequestRateLimiter, summary_row
from llmasos.errors import (
    AppNotFoundError,
    AuthenticationError,
    LLMasOSError,
    PermissionDeniedError,
    QuotaExceededError,
)
from llmasos.kernel.syscalls import Syscalls
from llmasos.security.apps import App, AppRegistry
from llmasos.security.audit import AuditRecord
from llmasos.security.keys import KEY_PREFIX

#: The identity of unauthenticated calls when the operator allowed them (`--allow-anonymous`).
ANONYMOUS = App("anonymous", priority="batch", capabilities=("model:*", "service:*", "tool:*"))
#: Paths anyone may read: liveness, the API's own description, and the Ollama API's version (which
#: Ollama's clients ask, without a key, to find out whether a server is there).
PUBLIC_PATHS = frozenset(
    {"/healthz", "/docs", "/docs/oauth2-redirect", "/redoc", "/openapi.json", "/api/version"}
)
#: Prefixes of paths anyone may read: the web console's page and assets, which hold no data (every
#: call the page makes carries the key it was given).
PUBLIC_PREFIXES = ("/ui/",)
#: Methods named in metric labels and audit rows; any other is "OTHER", so clients cannot add labels.
_METHODS = frozenset({"GET", "POST", "PUT", "PATCH", "DELETE", "HEAD", "OPTIONS"})
#: The label of every path that no route matches.
UNMATCHED = "unmatched"
#: The metric label of requests refused during a failed-authentication lockout, whatever their path.
THROTTLED_CALL = "http.auth_lockout"
#: Seconds between sweeps that write the summary rows of ended windows of failures.
SWEEP_SECONDS = 10.0


def bearer_key(headers: Headers) -> str | None:
    scheme, _, key = headers.get("authorization", "").partition(" ")
    if scheme.lower() != "bearer" or not key.strip():
        return None
    return key.strip()


def is_public(path: str) -> bool:
    return path in PUBLIC_PATHS or path == "/ui" or path.startswith(PUBLIC_PREFIXES)


def route_template(routes: Sequence[BaseRoute], scope: Scope) -> str:
    """The path template of the route `scope` goes to (`/os/tasks/{pid}`), or "unmatched": what
    metrics and audit rows name, so that a client's raw paths never become labels or rows."""
    path = scope["path"]
    root = scope.get("root_path", "")
    if root and path.startswith(root + "/"):
        path = path[len(root) :]
    partial = UNMATCHED  # a route of this path for another method (405), if none is for this one
    for template, regex, methods in _named_routes(routes):
        if regex.match(path):
            if methods is None or scope.get("method") in methods:
                return template
            partial = template if partial == UNMATCHED else partial
    return partial


#: A route's template, the regular expression of its paths, and its methods (None: any).
_NamedRoute = tuple[str, re.Pattern[str], frozenset[str] | None]
#: The routes last named, as (routes, how many there were, their named routes): one app's routes
#: are flattened once, not on each refusal.
_named: tuple[Sequence[BaseRoute], int, list[_NamedRoute]] | None = None


def _named_routes(routes: Sequence[BaseRoute]) -> list[_NamedRoute]:
    """Every route a request can reach, with its whole path template, in the router's order.

    FastAPI (0.16x) keeps each included router as one entry whose `matches` only answers inside its
    own dispatch: asked from a middleware it matched nothing, and every refused key was counted as
    "unmatched". `fastapi.routing.iter_route_contexts` lists the routes inside with their whole
    paths; older FastAPI lists them flat already."""
    global _named
    named = _named
    if named is not None and named[0] is routes and named[1] == len(routes):
        return named[2]
    iter_contexts = getattr(fastapi.routing, "iter_route_contexts", None)
    flat = iter_contexts(routes) if iter_contexts is not None else routes
    found: list[_NamedRoute] = []
    for route in flat:
        path, methods = getattr(route, "path", None), getattr(route, "methods", None)
        if isinstance(path, str) and path:
            found.append((path, compile_path(path)[0], frozenset(methods) if methods else None))
    named = (routes, len(routes), found)
    _named = named
    return named[2]


def call_name(method: str, template: str) -> str:
    return f"http {method if method in _METHODS else 'OTHER'} {template}"


class AuthenticationMiddleware:
    """Decides the calling app from the `Authorization` header before the route runs (ASGI)."""

    def __init__(
        self,
        app: ASGIApp,
        *,
        syscalls: Syscalls,
        routes: Sequence[BaseRoute],
        guard: FailedAuthGuard,
        allow_anonymous: bool = False,
        anonymous_app: str | None = None,
        request_rate: RequestRateLimiter | None = None,
    ) -> None:
        self.app = app
        self.request_rate = request_rate or RequestRateLimiter()
        self.syscalls = syscalls
        self.routes = routes
        self.guard = guard
        self.allow_anonymous = allow_anonymous
        self.anonymous_app = anonymous_app
        # Per client address: [the semaphore of its concurrent key lookups, requests holding or waiting].
        self._slots: dict[str, list] = {}

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http" or is_public(scope["path"]):
            await self.app(scope, receive, send)
            return
        try:
            caller = await self._authenticate(scope)
        except LLMasOSError as err:
            refusal = error_response(err, scope["path"].startswith(OLLAMA_PREFIX))
            await closing_if_body_unread(refusal, scope)(scope, receive, send)
            return
        scope.setdefault("state", {})["caller"] = caller
        await self.app(scope, receive, send)

    async def _authenticate(self, scope: Scope) -> App:
        key = bearer_key(Headers(scope=scope))
        if self.anonymous_app and (key is None or not key.startswith(KEY_PREFIX)):
            return self._started(await run_in_threadpool(keyless_app, self.syscalls.apps, self.anonymous_app))
        if key is None and self.allow_anonymous:
            return self._started(ANONYMOUS)
        client = scope.get("client")
        address = client[0] if client else "unknown"
        digest = self.guard.digest(key)
        self._refuse_if_locked(address, digest)
        self._refuse_if_out_of_requests(digest)  # from the key's digest: no lookup for a refused app
        # A key verified since the registry last changed is answered here, on the loop: a lookup in
        # a thread is a hand-off from this (niced) thread that can leave it holding the GIL while
        # descheduled (py-spy, issue 20's disconnect storm), which the kernel's thread then waits on.
        known = self.syscalls.apps.verified(key) if key is not None else None
        if known is not None:
            self.guard.succeeded(digest)
            return self._started(known, digest)
        async with self._lookup_slot(address):
            self._refuse_if_locked(address, digest)  # the lookups it waited behind may have failed
            return self._started(await self._look_up(scope, key, address, digest), digest)

    def _refuse_if_out_of_requests(self, digest: bytes | None) -> None:
        try:
            self.request_rate.refuse_key_if_empty(digest)
        except QuotaExceededError as err:
            self.syscalls.count("?", RATE_LIMITED_CALL, err)
            raise

    def _started(self, app: App, digest: bytes | None = None) -> App:
        """`app`, once one more request start fits its request rate (429 otherwise)."""
        try:
            self.request_rate.take(app, digest)
        except QuotaExceededError as err:
            self.syscalls.count(app.name, RATE_LIMITED_CALL, err)
            raise
        return app

    def _refuse_if_locked(self, address: str, digest: bytes | None) -> None:
        retry = self.guard.retry_after(address, digest)
        if retry is not None:  # refused as cheaply as can be: a flood of these must not slow the rest
            err: LLMasOSError = QuotaExceededError(
                f"too many failed authentications from {address}; retry in {retry:.0f} s with a valid key",
                retry,
            )
            self.syscalls.count("?", THROTTLED_CALL, err)
            raise err

    @contextlib.asynccontextmanager
    async def _lookup_slot(self, address: str) -> AsyncIterator[None]:
        """One of the `free_failures` lookups an address may run at once; the rest wait their turn,
        so a burst of bad keys is checked no faster than failures are allowed, and a burst of good
        ones is only delayed, never refused."""
        slot = self._slots.get(address)
        if slot is None:
            slot = self._slots[address] = [asyncio.Semaphore(self.guard.policy.free_failures), 0]
        slot[1] += 1
        try:
            async with slot[0]:
                yield
        finally:
            slot[1] -= 1
            if slot[1] == 0:  # nobody holds or waits for it: forget the address
                del self._slots[address]

    async def _look_up(self, scope: Scope, key: str | None, address: str, digest: bytes | None) -> App:
        self.guard.checking(address)
        try:
            app = await run_in_threadpool(self.syscalls.apps.authenticate, key)
        except AuthenticationError as err:
            # The route's name only for a refusal: matching a path against every route cost a
            # quarter of the event loop's time in a storm of well-keyed streams (py-spy, issue 20).
            call = call_name(scope["method"], route_template(self.routes, scope))
            if self.guard.failed(address):
                self.syscalls.record("?", call, address, err)
            else:
                self.syscalls.count("?", call, err)
            raise
        finally:
            self.guard.checked(address)
        self.guard.succeeded(digest)
        return app


def write_failure_summaries(guard: FailedAuthGuard, syscalls: Syscalls, *, everything: bool = False) -> int:
    """Write one audit row per address and ended window of failed authentications (every open
    window too with `everything`, at shutdown); returns how many."""
    summaries = guard.finished_windows(everything=everything)
    if syscalls.audit is not None:
        for summary in summaries:
            syscalls.audit.record(_summary_row(summary))
    return len(summaries)


def write_refusal_summaries(
    limiter: RequestRateLimiter, syscalls: Syscalls, *, everything: bool = False
) -> int:
    """Write one audit row per app and ended window of requests refused by its request rate."""
    summaries = limiter.finished_windows(everything=everything)
    if syscalls.audit is not None:
        for summary in summaries:
            syscalls.audit.record(summary_row(summary))
    return len(summaries)


def _summary_row(summary: FailureSummary) -> AuditRecord:
    unaudited = summary.failures - summary.audited
    return AuditRecord(
        app="?",
        call="http.auth_failures",
        outcome="denied",
        target=summary.address,
        allowed=False,
        reason=(
            f"{unaudited} more failed authentications from {summary.address} and "
            f"{summary.throttled} requests refused during lockouts in {summary.seconds:.0f} s "
            f"(the first {summary.audited} of {summary.failures} failures have rows of their own)"
        ),
        duration_s=summary.seconds,
        interface="http",
        ts=summary.started,
    )


def caller(request: Request) -> App:
    """FastAPI dependency: the app `AuthenticationMiddleware` authenticated for this request."""
    app = request.scope.get("state", {}).get("caller")
    if app is None:  # an app built without the middleware: check the key here, as strictly
        state = request.app.state
        key = bearer_key(request.headers)
        if getattr(state, "anonymous_app", None) and (key is None or not key.startswith(KEY_PREFIX)):
            return keyless_app(state.syscalls.apps, state.anonymous_app)
        if key is None and state.allow_anonymous:
            return ANONYMOUS
        return state.syscalls.apps.authenticate(key)
    return app


def keyless_app(apps: AppRegistry, name: str) -> App:
    """`--anonymous-app NAME`: a request with no key, or with one that is not an LLMasOS key (Ollama's
    clients send none or a placeholder), runs as app NAME, read afresh so that its priority, quotas
    and capabilities as they are now apply. A wrong `lmos-` key is still refused (401)."""
    try:
        app = apps.get(name)
    except AppNotFoundError:
        raise AuthenticationError(
            f"requests without a key run as app {name!r} (--anonymous-app), which does not exist; "
            f"an admin can create it with `llmasos apps create {name}`, or send an app's key"
        ) from None
    if app.is_admin:  # never hand admin rights to whoever can reach the port
        raise AuthenticationError(
            f"requests without a key run as app {name!r} (--anonymous-app), which holds the admin "
            "capability, so they are refused; bind them to an app without it, or send an app's key"
        )
    return app


def admin(request: Request) -> App:
    """FastAPI dependency: the calling app, which must hold the admin capability (403 otherwise)."""
    app = caller(request)
    if not app.is_admin:
        route = request.scope.get("route")
        template = getattr(route, "path", UNMATCHED)
        err: LLMasOSError = PermissionDeniedError(
            f"app {app.name!r} may not {request.method} {template}; it needs the admin capability"
        )
        request.app.state.syscalls.record(app.name, call_name(request.method, template), error=err)
        raise err
    return app


#: Route parameter types: `app: Caller` is the authenticated app, `app: Admin` one with admin rights.
Caller = Annotated[App, Depends(caller)]
Admin = Annotated[App, Depends(admin)]
