"""An app's uploaded files (OpenAI's `/v1/files`): bytes as sent, with a name and a purpose."""

from __future__ import annotations

import time

from llmasos.data.app_data import AppData, new_id
from llmasos.data.pages import PageRequest, page
from llmasos.data.quota import require_room
from llmasos.errors import DataNotFoundError, InvalidRequestError, UnsupportedFileError

PURPOSES = (
    "assistants",
    "assistants_output",
    "batch",
    "batch_output",
    "fine-tune",
    "fine-tune-results",
    "vision",
    "user_data",
)
MAX_FILENAME = 255


def file_object(row) -> dict:
    return {
        "id": row["id"],
        "object": "file",
        "bytes": row["bytes"],
        "created_at": row["created_at"],
        "filename": row["filename"],
        "purpose": row["purpose"],
        "status": "processed",
        "expires_at": None,
        "status_details": None,
    }


def create_file(data: AppData, filename: str, content: bytes, purpose: str = "assistants") -> dict:
    if purpose not in PURPOSES:
        raise InvalidRequestError(f"purpose {purpose!r} is not one of {', '.join(PURPOSES)}")
    filename = (filename or "").replace("\\", "/").rsplit("/", 1)[-1].strip()
    if not filename or len(filename) > MAX_FILENAME:
        raise InvalidRequestError(f"give the file a name of 1 to {MAX_FILENAME} characters")
    if not content:
        raise UnsupportedFileError(f"{filename!r} is empty (0 bytes); upload a file with content")
    file_id = new_id("file-")
    with data.db.transaction() as conn:
        require_room(conn, len(content), 1, f"uploading {filename!r}")
        conn.execute(
            "INSERT INTO files (id, filename, purpose, bytes, content, created_at) VALUES (?, ?, ?, ?, ?, ?)",
            (
                file_id,
                filename,
                purpose,
                len(content),
                data.seal_bytes(content, f"file:{file_id}"),
                int(time.time()),
            ),
        )
    return get_file(data, file_id)


def get_file(data: AppData, file_id: str) -> dict:
    rows = data.db.execute(
        "SELECT id, filename, purpose, bytes, created_at FROM files WHERE id = ?", (file_id,)
    )
    if not rows:
        raise DataNotFoundError(f"no file {file_id!r}; list yours with GET /v1/files")
    return file_object(rows[0])


def file_content(data: AppData, file_id: str) -> tuple[str, bytes]:
    """(file name, bytes)."""
    rows = data.db.execute("SELECT filename, content FROM files WHERE id = ?", (file_id,))
    if not rows:
        raise DataNotFoundError(f"no file {file_id!r}; list yours with GET /v1/files")
    return rows[0]["filename"], data.open_bytes(bytes(rows[0]["content"]), f"file:{file_id}")


def list_files(data: AppData, request: PageRequest, purpose: str | None = None) -> dict:
    where, params = ("WHERE purpose = ?", (purpose,)) if purpose else ("", ())
    rows = data.db.execute(
        f"SELECT id, filename, purpose, bytes, created_at FROM files {where} ORDER BY {request.order_sql()}",
        params,
    )
    return page([file_object(r) for r in rows], request)


def delete_file(data: AppData, file_id: str) -> dict:
    """Delete the file and, by cascade, its place in every vector store with its chunks and vectors."""
    with data.db.transaction() as conn:
        if conn.execute("DELETE FROM files WHERE id = ?", (file_id,)).rowcount == 0:
            raise DataNotFoundError(f"no file {file_id!r}; list yours with GET /v1/files")
    return {"id": file_id, "object": "file", "deleted": True}
