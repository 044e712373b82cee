"""Per-app data quotas (bytes and items) and the usage they are checked against.

Bytes are what the app's data takes: uploads, extracted chunk text and vectors, key-value entries,
conversation messages and stored responses. Items are the things an app creates one by one: files,
vector stores, keys and conversations. A write that would pass a quota is refused (413) before
anything is written.
"""

from __future__ import annotations

import os
import sqlite3
from dataclasses import asdict, dataclass

from llmasos.errors import StorageQuotaError

# 1 GiB and 100k items by default: room for thousands of documents on a laptop, while one app
# cannot fill the disk; an admin raises or lowers them per app. LLMASOS_DATA_MAX_BYTES/ITEMS override.
DEFAULT_MAX_BYTES = int(os.environ.get("LLMASOS_DATA_MAX_BYTES", 2**30))
DEFAULT_MAX_ITEMS = int(os.environ.get("LLMASOS_DATA_MAX_ITEMS", 100_000))


@dataclass(frozen=True)
class Usage:
    bytes: int
    items: int
    files: int
    vector_stores: int
    chunks: int
    kv_keys: int
    max_bytes: int
    max_items: int
    conversations: int = 0  # threads of response chains included
    conversation_items: int = 0

    def to_dict(self) -> dict:
        return asdict(self)


def usage(conn: sqlite3.Connection) -> Usage:
    one = lambda sql: conn.execute(sql).fetchone()[0] or 0  # noqa: E731
    files, file_bytes = conn.execute("SELECT count(*), coalesce(sum(bytes), 0) FROM files").fetchone()
    chunks, chunk_bytes = conn.execute(
        "SELECT count(*), coalesce(sum(length(text) + length(search_text) + length(embedding)), "
        "0) FROM chunks"
    ).fetchone()
    keys, kv_bytes = conn.execute(
        "SELECT count(*), coalesce(sum(length(key) + length(value)), 0) FROM kv"
    ).fetchone()
    stores = one("SELECT count(*) FROM vector_stores")
    conversations = one("SELECT count(*) FROM conversations")
    items, item_bytes = conn.execute(
        "SELECT count(*), coalesce(sum(length(text)), 0) FROM conversation_items"
    ).fetchone()
    item_bytes += one("SELECT sum(length(body) + length(context)) FROM responses")
    max_bytes, max_items = limits(conn)
    return Usage(
        file_bytes + chunk_bytes + kv_bytes + item_bytes,
        files + stores + keys + conversations,
        files,
        stores,
        chunks,
        keys,
        max_bytes,
        max_items,
        conversations,
        items,
    )


def limits(conn: sqlite3.Connection) -> tuple[int, int]:
    row = conn.execute("SELECT max_bytes, max_items FROM quota WHERE id = 1").fetchone()
    if row is None:
        return DEFAULT_MAX_BYTES, DEFAULT_MAX_ITEMS
    return (row[0] if row[0] is not None else DEFAULT_MAX_BYTES), (
        row[1] if row[1] is not None else DEFAULT_MAX_ITEMS
    )


def set_limits(conn: sqlite3.Connection, max_bytes: int | None, max_items: int | None) -> None:
    conn.execute(
        "INSERT INTO quota (id, max_bytes, max_items) VALUES (1, ?, ?) "
        "ON CONFLICT(id) DO UPDATE SET max_bytes = excluded.max_bytes, max_items = excluded.max_items",
        (max_bytes, max_items),
    )


def require_room(conn: sqlite3.Connection, more_bytes: int, more_items: int, what: str) -> None:
    """StorageQuotaError if adding `more_bytes` and `more_items` passes a limit. Inside the write's
    transaction, so two writes cannot both take the last room."""
    used = usage(conn)
    if used.bytes + more_bytes > used.max_bytes:
        raise StorageQuotaError(
            f"{what} needs {more_bytes:,} bytes but the app has "
            f"{max(0, used.max_bytes - used.bytes):,} of its "
            f"{used.max_bytes:,}-byte data quota left; delete files or ask an admin to raise it"
        )
    if used.items + more_items > used.max_items:
        raise StorageQuotaError(
            f"{what} would make {used.items + more_items:,} items, "
            f"past the app's quota of {used.max_items:,}; "
            "delete some or ask an admin to raise it"
        )
