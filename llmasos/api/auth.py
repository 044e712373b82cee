"""Authentication: the bearer key names the app; every route receives that app as its caller."""

from __future__ import annotations

from typing import Annotated

from fastapi import Depends, Request

from llmasos.errors import AppNotFoundError, AuthenticationError, LLMasOSError, PermissionDeniedError
from llmasos.security.apps import App, AppRegistry
from llmasos.security.keys import KEY_PREFIX

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
    try:
        if getattr(state, "anonymous_app", None) and (key is None or not key.startswith(KEY_PREFIX)):
            return keyless_app(state.syscalls.apps, state.anonymous_app)
        if key is None and state.allow_anonymous:
            return ANONYMOUS
        return state.syscalls.apps.authenticate(key)
    except AuthenticationError as err:
        state.syscalls.record("?", f"http {request.method} {request.url.path}", error=err)
        raise


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
        err: LLMasOSError = PermissionDeniedError(
            f"app {app.name!r} may not {request.method} {request.url.path}; it needs the admin capability"
        )
        request.app.state.syscalls.record(app.name, f"http {request.method} {request.url.path}", error=err)
        raise err
    return app


#: Route parameter types: `app: Caller` is the authenticated app, `app: Admin` one with admin rights.
Caller = Annotated[App, Depends(caller)]
Admin = Annotated[App, Depends(admin)]
