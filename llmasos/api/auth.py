"""Authentication: the bearer key names the app; every route receives that app as its caller."""

from __future__ import annotations

from typing import Annotated

from fastapi import Depends, Request

from llmasos.errors import AuthenticationError, LLMasOSError, PermissionDeniedError
from llmasos.security.apps import App

#: The identity of unauthenticated calls when the operator allowed them (`--allow-anonymous`).
ANONYMOUS = App("anonymous", priority="batch", capabilities=("model:*", "service:*", "tool:*"))


def bearer_key(request: Request) -> str | None:
    header = request.headers.get("authorization", "")
    scheme, _, key = header.partition(" ")
    if scheme.lower() != "bearer" or not key.strip():
        return None
    return key.strip()


def caller(request: Request) -> App:
    """FastAPI dependency: the calling app, or 401 (audited as denied)."""
    state = request.app.state
    key = bearer_key(request)
    if key is None and state.allow_anonymous:
        return ANONYMOUS
    try:
        return state.syscalls.apps.authenticate(key)
    except AuthenticationError as err:
        state.syscalls.record("?", f"http {request.method} {request.url.path}", error=err)
        raise


def admin(request: Request) -> App:
    """FastAPI dependency: the calling app, which must hold the admin capability (403 otherwise)."""
    app = caller(request)
    if not app.is_admin:
        err: LLMasOSError = PermissionDeniedError(
            f"app {app.name!r} may not {request.method} {request.url.path}; it needs the admin capability"
        )
        request.app.state.syscalls.record(app.name, f"http {request.method} {request.url.path}", error=err)
        raise err
    return app


#: Route parameter types: `app: Caller` is the authenticated app, `app: Admin` one with admin rights.
Caller = Annotated[App, Depends(caller)]
Admin = Annotated[App, Depends(admin)]
