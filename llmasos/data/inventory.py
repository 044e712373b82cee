"""An app's data by size: its documents, vector stores and conversations, largest first.

What the console's Data view lists and an operator asks first when an app nears its quota: which
things take the room. Sizes are counted as the quota counts them (`quota.usage`): a document its
upload's bytes, a vector store the bytes of the chunks and vectors its files made, a conversation
the text of its items. Names are the ones the OpenAI-style objects carry (no content is read).
"""

from __future__ import annotations

import sqlite3

from llmasos.data.app_data import AppData
from llmasos.data.files import file_object

#: Rows of each kind an inventory lists at most (the largest).
DEFAULT_LIMIT = 50


def inventory(data: AppData, limit: int = DEFAULT_LIMIT) -> dict[str, list[dict]]:
    """The app's `limit` largest documents, vector stores and conversations, each list largest first."""
    with data.db.transaction() as conn:
        return {
            "documents": _documents(conn, limit),
            "vector_stores": _vector_stores(conn, limit),
            "conversations": _conversations(conn, limit),
        }


def _documents(conn: sqlite3.Connection, limit: int) -> list[dict]:
    rows = conn.execute(
        "SELECT id, filename, purpose, bytes, created_at FROM files ORDER BY bytes DESC, id LIMIT ?",
        (limit,),
    )
    return [
        {k: f[k] for k in ("id", "filename", "purpose", "bytes", "created_at")}
        for f in map(file_object, rows)
    ]


def _vector_stores(conn: sqlite3.Connection, limit: int) -> list[dict]:
    rows = conn.execute(
        "SELECT v.id, v.name, v.created_at, count(f.file_id) AS files, "
        "coalesce(sum(f.usage_bytes), 0) AS bytes "
        "FROM vector_stores v LEFT JOIN store_files f ON f.store_id = v.id "
        "GROUP BY v.id ORDER BY bytes DESC, v.id LIMIT ?",
        (limit,),
    )
    return [dict(row) for row in rows]


def _conversations(conn: sqlite3.Connection, limit: int) -> list[dict]:
    rows = conn.execute(
        "SELECT c.id, c.created_at, c.is_thread, count(i.seq) AS items, "
        "coalesce(sum(length(i.text)), 0) AS bytes "
        "FROM conversations c LEFT JOIN conversation_items i ON i.conversation_id = c.id "
        "GROUP BY c.id ORDER BY bytes DESC, c.id LIMIT ?",
        (limit,),
    )
    return [dict(row) | {"is_thread": bool(row["is_thread"])} for row in rows]
