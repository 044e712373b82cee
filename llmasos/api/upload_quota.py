"""Uploads counted against the caller's data quota while they are read: a file that cannot fit in
what the app has left is refused (413) as soon as its declared length, or the bytes read so far,
pass that room, before the multipart parser spools the rest of it to disk. Nothing is written.

The body limit (`limits.py`) bounds every request for the server's sake; this bounds uploads for the
app's: with `--max-body-size` raised to take large documents, an app with 10 MB of quota left no
longer makes the server read and spool a 1 GB upload only to refuse it at the end. The upload's own
system call still checks the exact size inside its transaction (`data/quota.require_room`).
"""

from __future__ import annotations

from starlette.concurrency import run_in_threadpool
from starlette.datastructures import Headers
from starlette.exceptions import HTTPException
from starlette.types import ASGIApp, Message, Receive, Scope, Send

from llmasos.api.errors import error_response
from llmasos.errors import StorageQuotaError
from llmasos.kernel.syscalls import Syscalls

#: Paths whose bodies become stored files.
UPLOAD_PATHS = frozenset({"/v1/files"})
#: Bytes of multipart framing (boundaries, part headers, the `purpose` field) allowed beyond the
#: room, so that a file that fits exactly is not refused for its envelope.
FRAMING_ALLOWANCE = 64 * 2**10


class UploadQuotaMiddleware:
    """Refuses an upload larger than the caller's remaining data quota while it is read."""

    def __init__(self, app: ASGIApp, *, syscalls: Syscalls) -> None:
        self.app = app
        self.syscalls = syscalls

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        room = await self._room(scope)
        if room is None:
            await self.app(scope, receive, send)
            return
        limit = room + FRAMING_ALLOWANCE
        declared = Headers(scope=scope).get("content-length", "")
        if declared.isdigit() and int(declared) > limit:
            await error_response(_over(int(declared), room))(scope, receive, send)
            return
        received = 0

        async def counted() -> Message:
            nonlocal received
            message = await receive()
            if message["type"] == "http.request":
                received += len(message.get("body", b""))
                if received > limit:
                    # An HTTPException, as Starlette's body limit raises: FastAPI lets those through
                    # its form parsing (any other error there becomes a 400).
                    raise UploadOverQuota(_over(received, room))
            return message

        await self.app(scope, counted, send)

    async def _room(self, scope: Scope) -> int | None:
        """The caller's room for an upload; None for any other request, or a caller that is not
        authenticated or may not upload (the route answers those itself)."""
        if scope["type"] != "http" or scope["method"] != "POST" or scope["path"] not in UPLOAD_PATHS:
            return None
        caller = scope.get("state", {}).get("caller")
        if caller is None:
            return None
        return await run_in_threadpool(self.syscalls.data_room, caller)


class UploadOverQuota(HTTPException):
    """413 raised while the body is read; `limits.py`'s handler answers with `error`'s message."""

    def __init__(self, error: StorageQuotaError) -> None:
        super().__init__(error.http_status, error.message)
        self.error = error


def _over(size: int, room: int) -> StorageQuotaError:
    return StorageQuotaError(
        f"this upload is at least {size:,} bytes but the app has {room:,} bytes of its data quota "
        "left; delete files or ask an admin to raise the quota (PUT /os/apps/NAME/data/quota)"
    )
