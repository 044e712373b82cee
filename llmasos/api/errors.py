"""The one place where errors become HTTP responses, in OpenAI's shape:
`{"error": {"message": ..., "type": ..., "code": ...}}` — or, under the Ollama API's `/api/`, in
Ollama's shape `{"error": "..."}` (with 400 for a body of wrong types, as Ollama answers it).

A client's mistake is never a 500: our own errors carry their status; FastAPI's validation
errors become 422 (wrong types) or 400 (a body that is not JSON at all); unknown routes 404.
Anything else is our bug: logged with its traceback, answered 500 without internals.

Every request that ends in an error is audited here, once: errors a system call already wrote
(`LLMasOSError.audited`) are not written again; the rest are written for the calling app when the
request names one (a valid key, or anonymous where allowed), and a 500 always. A request with no
valid key is not written one row each here (the authentication layer counts those), so a flood of
bad requests cannot grow the log without bound.
"""

from __future__ import annotations

import logging
import math

from fastapi import FastAPI, Request
from fastapi.exceptions import RequestValidationError
from fastapi.responses import JSONResponse
from starlette.concurrency import run_in_threadpool
from starlette.exceptions import HTTPException as StarletteHTTPException

from llmasos.errors import AuditIntegrityError, LLMasOSError, QuotaExceededError

logger = logging.getLogger("llmasos.api")


def error_body(message: str, type_: str, code: str | int | None = None, param: str | None = None) -> dict:
    return {"error": {"message": message, "type": type_, "code": code, "param": param}}


#: Routes whose errors take Ollama's shape (llmasos/api/ollama_routes.py).
OLLAMA_PREFIX = "/api/"


def is_ollama(request: Request) -> bool:
    return request.url.path.startswith(OLLAMA_PREFIX)


def error_response(err: LLMasOSError, ollama: bool = False) -> JSONResponse:
    headers = {}
    if isinstance(err, QuotaExceededError):
        headers["Retry-After"] = str(max(1, math.ceil(err.retry_after)))
    body = {"error": err.message} if ollama else error_body(err.message, err.type, err.type)
    return JSONResponse(body, err.http_status, headers=headers)


def _validation_message(err: RequestValidationError) -> tuple[str, str | None, int]:
    problems = []
    for item in err.errors():
        where = ".".join(str(p) for p in item.get("loc", ()) if p != "body")
        if item.get("type") == "json_invalid":
            return (
                f"the body is not valid JSON: {item.get('ctx', {}).get('error', item.get('msg'))}",
                None,
                400,
            )
        if not where and item.get("type") in ("model_attributes_type", "dict_type", "missing"):
            return "the body must be a JSON object (send Content-Type: application/json)", None, 400
        problems.append(f"{where or 'body'}: {item.get('msg')}")
    first = err.errors()[0] if err.errors() else {}
    param = ".".join(str(p) for p in first.get("loc", ()) if p != "body") or None
    return "invalid request: " + "; ".join(problems[:5]), param, 422


def _caller_name(request: Request) -> str | None:
    """The app a failed request came from, or None when it named none that is valid."""
    caller = request.scope.get("state", {}).get("caller")  # set by api.auth.AuthenticationMiddleware
    if caller is not None:
        return caller.name
    state = request.app.state
    scheme, _, key = request.headers.get("authorization", "").partition(" ")
    key = key.strip() if scheme.lower() == "bearer" and key.strip() else None
    if key is None:
        return "anonymous" if getattr(state, "allow_anonymous", False) else None
    try:
        return state.syscalls.apps.authenticate(key).name
    except LLMasOSError:
        return None


def _route(request: Request) -> str:
    """The route's template (`/os/tasks/{pid}`), never the raw path: one name per endpoint."""
    route = request.scope.get("route")
    return getattr(route, "path", None) or "(no route)"


def audit_failed_request(request: Request, status: int, reason: str, err: LLMasOSError | None = None) -> None:
    """Write the audit row of a request that ended in an error, unless it has one already."""
    if err is not None and (err.audited or isinstance(err, AuditIntegrityError)):
        return
    syscalls = getattr(request.app.state, "syscalls", None)
    app = _caller_name(request) if syscalls is not None else None
    if syscalls is None or (app is None and status < 500):
        return
    try:
        syscalls.record(
            app or "?", f"http {request.method} {_route(request)}", error=err or _Failed(reason, status)
        )
    except Exception:  # the answer to the client must not turn into another error
        logger.exception("could not audit the failed request %s %s", request.method, _route(request))


class _Failed(LLMasOSError):
    """A failure that is not one of ours (validation, routing, a bug), as the audit log records it."""

    def __init__(self, message: str, status: int) -> None:
        super().__init__(message)
        self.http_status = status
        self.type = "internal_error" if status >= 500 else "invalid_request_error"


def install_error_handlers(app: FastAPI) -> None:
    @app.exception_handler(LLMasOSError)
    async def _ours(request: Request, err: LLMasOSError) -> JSONResponse:
        if err.http_status >= 500:
            logger.warning("%s %s: %s", request.method, request.url.path, err.message)
        await run_in_threadpool(audit_failed_request, request, err.http_status, err.message, err)
        return error_response(err, is_ollama(request))

    @app.exception_handler(RequestValidationError)
    async def _invalid(request: Request, err: RequestValidationError) -> JSONResponse:
        message, param, status = _validation_message(err)
        await run_in_threadpool(audit_failed_request, request, status, message)
        if is_ollama(request):
            return JSONResponse({"error": message}, 400)
        return JSONResponse(error_body(message, "invalid_request_error", "invalid_value", param), status)

    @app.exception_handler(StarletteHTTPException)
    async def _http(request: Request, err: StarletteHTTPException) -> JSONResponse:
        type_ = "not_found_error" if err.status_code == 404 else "invalid_request_error"
        message = (
            f"no such endpoint: {request.method} {request.url.path}; see /docs for the API"
            if err.status_code in (404, 405)
            else str(err.detail)
        )
        await run_in_threadpool(audit_failed_request, request, err.status_code, message)
        if is_ollama(request):
            return JSONResponse({"error": message}, err.status_code, headers=getattr(err, "headers", None))
        return JSONResponse(
            error_body(message, type_), err.status_code, headers=getattr(err, "headers", None)
        )

    @app.exception_handler(Exception)
    async def _bug(request: Request, err: Exception) -> JSONResponse:
        logger.exception("unhandled error on %s %s", request.method, request.url.path)
        await run_in_threadpool(audit_failed_request, request, 500, f"internal error: {type(err).__name__}")
        if is_ollama(request):
            return JSONResponse({"error": "internal error; the server log has the details"}, 500)
        return JSONResponse(
            error_body("internal error; the server log has the details", "internal_error"), 500
        )
