"""`POST /os/pii/analyze`: the personal data a text holds, as the server's detector sees it (the
same detector the apps' policies use), so a client can check a text before it sends it."""

from __future__ import annotations

from typing import Annotated

from fastapi import APIRouter, Request
from pydantic import Field
from starlette.concurrency import run_in_threadpool

from llmasos.api.auth import Caller
from llmasos.api.schemas import _RequestBody

router = APIRouter(tags=["os"])


class PiiAnalyzeRequest(_RequestBody):
    text: Annotated[str, Field(max_length=200_000)]


@router.post("/os/pii/analyze")
async def analyze(body: PiiAnalyzeRequest, request: Request, app: Caller) -> dict:
    """{"entities": [{"type", "start", "end", "score"}], "counts": {type: n}}. Values are not
    echoed back: the caller has the text, and a response may end up in a log."""
    syscalls = request.app.state.syscalls
    found = await run_in_threadpool(syscalls.analyze_pii, app, body.text)
    counts: dict[str, int] = {}
    for d in found:
        counts[d.entity_type] = counts.get(d.entity_type, 0) + 1
    return {
        "entities": [
            {"type": d.entity_type, "start": d.start, "end": d.end, "score": round(d.score, 3)} for d in found
        ],
        "counts": counts,
    }
