"""OpenAI's `/v1/files`: upload (multipart), list, retrieve, content, delete — each app its own files."""

from __future__ import annotations

from typing import Annotated, Literal

from fastapi import APIRouter, File, Form, Query, Request, UploadFile
from fastapi.responses import Response
from starlette.concurrency import run_in_threadpool

from llmasos.api.auth import Caller
from llmasos.data.pages import PageRequest

router = APIRouter(tags=["files"])


def page_request(limit: int = 20, after: str | None = None, order: str = "desc") -> PageRequest:
    return PageRequest(limit=limit, after=after, order=order)


@router.post("/v1/files")
async def create_file(
    request: Request,
    app: Caller,
    file: Annotated[UploadFile, File(description="the file's bytes")],
    purpose: Annotated[str, Form()] = "assistants",
) -> dict:
    content = await file.read()
    syscalls = request.app.state.syscalls
    return await run_in_threadpool(syscalls.create_file, app, file.filename or "", content, purpose)


@router.get("/v1/files")
def list_files(
    request: Request,
    app: Caller,
    limit: Annotated[int, Query(ge=1, le=10_000)] = 20,
    after: str | None = None,
    order: Literal["asc", "desc"] = "desc",
    purpose: str | None = None,
) -> dict:
    return request.app.state.syscalls.list_files(app, page_request(min(limit, 100), after, order), purpose)


@router.get("/v1/files/{file_id}")
def get_file(file_id: str, request: Request, app: Caller) -> dict:
    return request.app.state.syscalls.get_file(app, file_id)


@router.get("/v1/files/{file_id}/content")
def file_content(file_id: str, request: Request, app: Caller) -> Response:
    filename, content = request.app.state.syscalls.file_content(app, file_id)
    quoted = filename.replace('"', "")
    return Response(
        content,
        media_type="application/octet-stream",
        headers={"Content-Disposition": f'attachment; filename="{quoted}"'},
    )


@router.delete("/v1/files/{file_id}")
def delete_file(file_id: str, request: Request, app: Caller) -> dict:
    return request.app.state.syscalls.delete_file(app, file_id)
