"""The web console's routes: its static page at `/ui`, and the overview it shows, once or as a stream.

The page holds no key in cookies: it sends the key it was given in an `Authorization` header on every
call, so another site can make a browser send nothing that acts as the operator (no CSRF), and the
key is never in a URL (so never in an access log or the browser's history). The page itself is
public (it holds no data); every byte of data it shows comes through an authenticated call.
"""

from __future__ import annotations

import asyncio
import json
from importlib import resources
from pathlib import Path

from fastapi import APIRouter, HTTPException, Query, Request
from fastapi.responses import FileResponse, RedirectResponse, StreamingResponse
from starlette.concurrency import run_in_threadpool

from llmasos.api.auth import Caller
from llmasos.errors import InvalidRequestError
from llmasos.kernel.overview_calls import SECTIONS

router = APIRouter(tags=["console"])
STATIC = Path(str(resources.files("llmasos.console") / "static"))
#: The console's URL prefix; `/ui/` and what lies under it are served without a key.
PREFIX = "/ui"
#: What the page may do: its own scripts, styles and calls only; no inline script, no frames, no
#: form posts elsewhere. `blob:` images are workflow graphs fetched with the key and shown as images.
CONTENT_SECURITY_POLICY = (
    "default-src 'none'; script-src 'self'; style-src 'self'; connect-src 'self'; "
    "img-src 'self' blob: data:; font-src 'self'; base-uri 'none'; form-action 'none'; "
    "frame-ancestors 'none'"
)
SECURITY_HEADERS = {
    "Content-Security-Policy": CONTENT_SECURITY_POLICY,
    "X-Content-Type-Options": "nosniff",
    "Referrer-Policy": "no-referrer",
    "X-Frame-Options": "DENY",
    "Cross-Origin-Opener-Policy": "same-origin",
    "Cross-Origin-Resource-Policy": "same-origin",
    "Cache-Control": "no-store",
}
MEDIA_TYPES = {
    ".html": "text/html",
    ".js": "text/javascript",
    ".css": "text/css",
    ".txt": "text/plain",
    ".json": "application/json",
}
#: The overview's sections each console view follows, as the page reads them (js/main.js); the
#: benchmarks and tests that act as the page read the same file.
VIEW_SECTIONS: dict[str, list[str]] = json.loads((STATIC / "js" / "view_sections.json").read_text())
#: Seconds between two snapshots of a live stream: the console's refresh (at most 1 s, as asked).
DEFAULT_INTERVAL = 1.0


@router.get(PREFIX, include_in_schema=False)
def console_root() -> RedirectResponse:
    return RedirectResponse(PREFIX + "/", status_code=308)


@router.get(PREFIX + "/{path:path}", include_in_schema=False)
def console_asset(path: str) -> FileResponse:
    """A file of the console (index.html for `/ui/`), with the security headers."""
    target = (STATIC / (path or "index.html")).resolve()
    inside = target.is_relative_to(STATIC.resolve())
    if not inside or not target.is_file() or target.suffix not in MEDIA_TYPES:
        raise HTTPException(404, f"no console file {path!r}; open {PREFIX}/")
    return FileResponse(target, media_type=MEDIA_TYPES[target.suffix], headers=SECURITY_HEADERS)


@router.get("/os/console/overview", tags=["os"])
def overview(
    request: Request,
    app: Caller,
    views: str | None = Query(None, description="the sections to read, comma-separated (all when absent)"),
) -> dict:
    """Everything a live view shows, read at one moment, as the key's app may see it: processes,
    apps with usage against quotas, models with memory and KV, latency p50/p95 over the last hour,
    nodes and recent audit rows. A read like a /metrics scrape: counted, not audited."""
    return request.app.state.syscalls.overview(app, wanted_sections(views))


@router.get("/os/apps/{name}/data/inventory", tags=["os"])
def data_inventory(
    name: str,
    request: Request,
    app: Caller,
    limit: int = Query(50, ge=1, le=500, description="rows of each kind, the largest"),
) -> dict:
    """App `name`'s largest documents, vector stores and conversations, each list largest first,
    with its data usage against its quota (its own app, or any app's with the admin key)."""
    return request.app.state.syscalls.data_inventory(app, name, limit)


# Not in the OpenAPI document: a stream that never ends by itself has no response a generated
# client or a fuzzer could wait for; /os/console/overview is the same data, once.
@router.get("/os/console/stream", tags=["os"], include_in_schema=False)
async def stream(
    request: Request,
    app: Caller,
    interval: float = Query(DEFAULT_INTERVAL, ge=0.25, le=10, description="seconds between snapshots"),
    views: str | None = Query(
        None, description="the overview's sections to follow, comma-separated (all when absent)"
    ),
    continued: bool = Query(False, description="a page already watching reopens it for another view"),
) -> StreamingResponse:
    """The overview as server-sent events (`event: overview`), one every `interval` seconds until
    the client goes away. Opening it is audited (`overview.watch`); the snapshots are not.

    Only the sections named in `views` are built (a page follows what its visible view shows), and
    each event carries only the sections that changed since the one before: the first carries them
    all, a section absent from a later event is as it was. `caller` and `now` are in every event.

    A page that shows another view reopens its stream `continued`, which is not audited again: one
    row per console opened, not per tab clicked (the snapshots themselves are reads that
    /os/console/overview gives unaudited, counted like a /metrics scrape)."""
    sections = wanted_sections(views)
    syscalls = request.app.state.syscalls
    if not continued:
        await run_in_threadpool(syscalls.watch_overview, app)

    async def snapshots():
        sent: dict[str, str] = {}
        while not await request.is_disconnected():
            snapshot = await run_in_threadpool(syscalls.overview, app, sections)
            yield f"event: overview\ndata: {changed_sections(snapshot, sent)}\n\n"
            await asyncio.sleep(interval)

    return StreamingResponse(
        snapshots(), media_type="text/event-stream", headers={"Cache-Control": "no-store"}
    )


def wanted_sections(views: str | None) -> frozenset[str] | None:
    """The sections a `views` parameter names (None: all; empty: none, the stream then only says
    the server is there), or InvalidRequestError naming the one it does not know."""
    if views is None:
        return None
    names = frozenset(name.strip() for name in views.split(",") if name.strip())
    if unknown := names - SECTIONS:
        raise InvalidRequestError(
            f"no overview section {sorted(unknown)[0]!r}; views takes some of {', '.join(sorted(SECTIONS))}"
        )
    return names


#: Fields of every event, changed or not.
ALWAYS_SENT = ("caller", "now")


def changed_sections(snapshot: dict, sent: dict[str, str]) -> str:
    """`snapshot` as JSON with only the sections whose JSON differs from what `sent` holds (what
    this stream sent before), which it then updates: an idle server's events are a few bytes, and
    a page redraws only what changed."""
    parts = []
    for name, value in snapshot.items():
        text = json.dumps(value, separators=(",", ":"))
        if name in ALWAYS_SENT or sent.get(name) != text:
            sent[name] = text
            parts.append(f"{json.dumps(name)}:{text}")
    return "{" + ",".join(parts) + "}"
