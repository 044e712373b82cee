"""An app's vector stores (OpenAI's `/v1/vector_stores`): stores, the files attached to them, and
file batches. Attaching a file records it `in_progress`; `ingest.py` makes it `completed`."""

from __future__ import annotations

import json
import time
from typing import Any

from llmasos.data.app_data import AppData, forget_store_index, new_id
from llmasos.data.chunking import ChunkingStrategy
from llmasos.data.pages import PageRequest, page
from llmasos.data.quota import require_room
from llmasos.errors import DataNotFoundError, InvalidRequestError

STATUSES = ("in_progress", "completed", "failed", "cancelled")
MAX_ATTRIBUTES = 16


def check_attributes(attributes: Any) -> dict:
    """OpenAI's attributes: at most 16 keys (64 characters) of strings (512), numbers or booleans."""
    if attributes is None:
        return {}
    if not isinstance(attributes, dict) or len(attributes) > MAX_ATTRIBUTES:
        raise InvalidRequestError(f"attributes must be an object of at most {MAX_ATTRIBUTES} keys")
    for key, value in attributes.items():
        if not isinstance(key, str) or not 0 < len(key) <= 64:
            raise InvalidRequestError("each attribute key must be a string of 1 to 64 characters")
        if not isinstance(value, str | int | float | bool) or (isinstance(value, str) and len(value) > 512):
            raise InvalidRequestError(
                f"attribute {key!r} must be a string (at most 512 characters), number or boolean"
            )
    return dict(attributes)


def _store_object(conn, row) -> dict:
    counts = {status: 0 for status in STATUSES}
    usage_bytes = 0
    for status, number, used in conn.execute(
        "SELECT status, count(*), coalesce(sum(usage_bytes), 0) FROM store_files WHERE store_id "
        "= ? GROUP BY status",
        (row["id"],),
    ):
        counts[status] = number
        usage_bytes += used
    return {
        "id": row["id"],
        "object": "vector_store",
        "created_at": row["created_at"],
        "name": row["name"],
        "usage_bytes": usage_bytes,
        "file_counts": {**counts, "total": sum(counts.values())},
        "status": "in_progress" if counts["in_progress"] else "completed",
        "last_active_at": row["last_active_at"],
        "metadata": json.loads(row["metadata"]),
        "expires_after": None,
        "expires_at": None,
    }


def create_store(data: AppData, name: str | None, metadata: dict | None) -> dict:
    metadata = metadata or {}
    if not isinstance(metadata, dict) or not all(isinstance(v, str) for v in metadata.values()):
        raise InvalidRequestError("metadata must be an object of string values")
    store_id, now = new_id("vs_"), int(time.time())
    with data.db.transaction() as conn:
        require_room(conn, 0, 1, "creating a vector store")
        conn.execute(
            "INSERT INTO vector_stores (id, name, metadata, created_at, last_active_at) "
            "VALUES (?, ?, ?, ?, ?)",
            (store_id, name or "", json.dumps(metadata), now, now),
        )
    return get_store(data, store_id)


def get_store(data: AppData, store_id: str) -> dict:
    with data.db.transaction() as conn:
        return _store_object(conn, _store_row(conn, store_id))


def _store_row(conn, store_id: str):
    row = conn.execute("SELECT * FROM vector_stores WHERE id = ?", (store_id,)).fetchone()
    if row is None:
        raise DataNotFoundError(f"no vector store {store_id!r}; list yours with GET /v1/vector_stores")
    return row


def list_stores(data: AppData, request: PageRequest) -> dict:
    with data.db.transaction() as conn:
        rows = conn.execute(f"SELECT * FROM vector_stores ORDER BY {request.order_sql()}").fetchall()
        return page([_store_object(conn, r) for r in rows], request)


def update_store(data: AppData, store_id: str, name: str | None, metadata: dict | None) -> dict:
    with data.db.transaction() as conn:
        row = _store_row(conn, store_id)
        conn.execute(
            "UPDATE vector_stores SET name = ?, metadata = ? WHERE id = ?",
            (
                row["name"] if name is None else name,
                row["metadata"] if metadata is None else json.dumps(metadata),
                store_id,
            ),
        )
    return get_store(data, store_id)


def delete_store(data: AppData, store_id: str) -> dict:
    """The store, its file attachments, chunks and vectors (the uploaded files stay, as in OpenAI)."""
    with data.db.transaction() as conn:
        _store_row(conn, store_id)
        conn.execute("DELETE FROM chunks WHERE store_id = ?", (store_id,))
        conn.execute("DELETE FROM vector_stores WHERE id = ?", (store_id,))
    forget_store_index(data.owner, store_id)
    return {"id": store_id, "object": "vector_store.deleted", "deleted": True}


def touch_store(data: AppData, store_id: str) -> None:
    data.db.execute("UPDATE vector_stores SET last_active_at = ? WHERE id = ?", (int(time.time()), store_id))


# ---- files in a store --------------------------------------------------------------------------


def store_file_object(row) -> dict:
    return {
        "id": row["file_id"],
        "object": "vector_store.file",
        "created_at": row["created_at"],
        "vector_store_id": row["store_id"],
        "status": row["status"],
        "last_error": json.loads(row["last_error"]) if row["last_error"] else None,
        "usage_bytes": row["usage_bytes"],
        "attributes": json.loads(row["attributes"]),
        "chunking_strategy": json.loads(row["chunking"]),
        # LLMasOS's own: ingestion progress
        "progress": {"chunks_done": row["chunks_done"], "chunks_total": row["chunks_total"]},
    }


def attach_files(
    data: AppData,
    store_id: str,
    file_ids: list[str],
    attributes: Any = None,
    chunking: ChunkingStrategy | None = None,
    batch_id: str | None = None,
) -> list[dict]:
    """Record each file as `in_progress` in the store (again, if it was there: re-ingested)."""
    attributes = check_attributes(attributes)
    chunking = chunking or ChunkingStrategy()
    if not file_ids or not all(isinstance(f, str) for f in file_ids):
        raise InvalidRequestError("give file_ids as a non-empty list of file ids")
    with data.db.transaction() as conn:
        _store_row(conn, store_id)
        for file_id in file_ids:
            if conn.execute("SELECT 1 FROM files WHERE id = ?", (file_id,)).fetchone() is None:
                raise DataNotFoundError(f"no file {file_id!r}; upload it with POST /v1/files first")
        if batch_id is not None:
            conn.execute(
                "INSERT INTO batches (id, store_id, created_at) VALUES (?, ?, ?)",
                (batch_id, store_id, int(time.time())),
            )
        for file_id in file_ids:
            conn.execute("DELETE FROM store_files WHERE store_id = ? AND file_id = ?", (store_id, file_id))
            conn.execute(
                "INSERT INTO store_files (store_id, file_id, batch_id, status, attributes, chunking, "
                "created_at) "
                "VALUES (?, ?, ?, 'in_progress', ?, ?, ?)",
                (
                    store_id,
                    file_id,
                    batch_id,
                    json.dumps(attributes),
                    json.dumps(chunking.to_openai()),
                    int(time.time()),
                ),
            )
    return [get_store_file(data, store_id, f) for f in file_ids]


def get_store_file(data: AppData, store_id: str, file_id: str) -> dict:
    rows = data.db.execute(
        "SELECT * FROM store_files WHERE store_id = ? AND file_id = ?", (store_id, file_id)
    )
    if not rows:
        with data.db.transaction() as conn:
            _store_row(conn, store_id)
        raise DataNotFoundError(f"vector store {store_id!r} holds no file {file_id!r}")
    return store_file_object(rows[0])


def list_store_files(
    data: AppData, store_id: str, request: PageRequest, status: str | None = None, batch_id: str | None = None
) -> dict:
    if status is not None and status not in STATUSES:
        raise InvalidRequestError(f"filter must be one of {', '.join(STATUSES)}")
    with data.db.transaction() as conn:
        _store_row(conn, store_id)
        sql, params = "SELECT * FROM store_files WHERE store_id = ?", [store_id]
        if status:
            sql, params = sql + " AND status = ?", [*params, status]
        if batch_id:
            sql, params = sql + " AND batch_id = ?", [*params, batch_id]
        rows = conn.execute(f"{sql} ORDER BY {request.order_sql()}", params).fetchall()
    return page([store_file_object(r) for r in rows], request)


def detach_file(data: AppData, store_id: str, file_id: str) -> dict:
    with data.db.transaction() as conn:
        _store_row(conn, store_id)
        conn.execute("DELETE FROM chunks WHERE store_id = ? AND file_id = ?", (store_id, file_id))
        if (
            conn.execute(
                "DELETE FROM store_files WHERE store_id = ? AND file_id = ?", (store_id, file_id)
            ).rowcount
            == 0
        ):
            raise DataNotFoundError(f"vector store {store_id!r} holds no file {file_id!r}")
    return {"id": file_id, "object": "vector_store.file.deleted", "deleted": True}


# ---- file batches ------------------------------------------------------------------------------


def batch_object(data: AppData, store_id: str, batch_id: str) -> dict:
    with data.db.transaction() as conn:
        _store_row(conn, store_id)
        batch = conn.execute(
            "SELECT * FROM batches WHERE id = ? AND store_id = ?", (batch_id, store_id)
        ).fetchone()
        if batch is None:
            raise DataNotFoundError(f"vector store {store_id!r} has no file batch {batch_id!r}")
        counts = {status: 0 for status in STATUSES}
        for status, number in conn.execute(
            "SELECT status, count(*) FROM store_files WHERE batch_id = ? GROUP BY status", (batch_id,)
        ):
            counts[status] = number
    if counts["in_progress"]:
        status = "in_progress"
    elif batch["cancelled"]:
        status = "cancelled"
    else:
        status = "failed" if counts["failed"] and not counts["completed"] else "completed"
    return {
        "id": batch_id,
        "object": "vector_store.files_batch",
        "created_at": batch["created_at"],
        "vector_store_id": store_id,
        "status": status,
        "file_counts": {**counts, "total": sum(counts.values())},
    }


def cancel_batch(data: AppData, store_id: str, batch_id: str) -> dict:
    batch_object(data, store_id, batch_id)  # 404s first
    with data.db.transaction() as conn:
        conn.execute("UPDATE batches SET cancelled = 1 WHERE id = ?", (batch_id,))
        conn.execute(
            "UPDATE store_files SET status = 'cancelled' WHERE batch_id = ? AND status = 'in_progress'",
            (batch_id,),
        )
    return batch_object(data, store_id, batch_id)


def new_batch_id() -> str:
    return new_id("vsfb_")


def embedding_model(data: AppData, store_id: str) -> str | None:
    rows = data.db.execute("SELECT embedding_model FROM vector_stores WHERE id = ?", (store_id,))
    return rows[0][0] if rows else None


def update_attributes(data: AppData, store_id: str, file_id: str, attributes: Any) -> dict:
    attributes = check_attributes(attributes)
    get_store_file(data, store_id, file_id)  # 404s first
    data.db.execute(
        "UPDATE store_files SET attributes = ? WHERE store_id = ? AND file_id = ?",
        (json.dumps(attributes), store_id, file_id),
    )
    return get_store_file(data, store_id, file_id)


def parsed_content(data: AppData, store_id: str, file_id: str) -> list[dict]:
    """The file's indexed text, chunk by chunk (OpenAI's vector store file content)."""
    get_store_file(data, store_id, file_id)
    rows = data.db.execute(
        "SELECT text FROM chunks WHERE store_id = ? AND file_id = ? ORDER BY ordinal", (store_id, file_id)
    )
    return [{"type": "text", "text": r["text"]} for r in rows]
