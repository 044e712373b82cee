"""An app's conversations (OpenAI's `/v1/conversations`): their items in order, the core facts and
running summary that their memory keeps, and recall of older items by BM25 (SQLite FTS5).

A conversation is also what a chain of responses (`previous_response_id`) lives in: a *thread*,
made by the system rather than the client (`is_thread`), and not listed among the app's
conversations. Item text goes in and out of the database only here (`_insert_items`, `_item_rows`),
so a cipher at the storage boundary has one place to wrap.

At rest, an item's text, the core facts and the summary are sealed under the app's data key
(`conversation_sealing.py`), and the recall index holds keyed hashes of the items' words, never the
words (`search_terms.py`).
"""

from __future__ import annotations

import json
import sqlite3
import time
from dataclasses import dataclass, replace
from typing import Any

from llmasos.data.app_data import AppData, new_id
from llmasos.data.conversation_sealing import (
    core_of,
    open_item_text,
    seal_item_text,
    sealed_core,
    sealed_summary,
    summary_of,
)
from llmasos.data.pages import PageRequest, page
from llmasos.data.quota import require_room
from llmasos.data.search_terms import hashed_query, hashed_terms
from llmasos.errors import DataNotFoundError, InvalidRequestError

ROLES = ("user", "assistant", "system", "developer")
MAX_METADATA = 16
MAX_CORE_FACTS = 64
MAX_FACT_CHARS = 1000
#: Items one request may add (OpenAI's limit for conversations.items.create).
MAX_ITEMS_PER_CALL = 20


@dataclass(frozen=True)
class Item:
    """One message of a conversation, as memory reads it."""

    seq: int
    id: str
    role: str
    text: str
    tokens: int | None  # its token count for `tokens_model`, if counted
    tokens_model: str | None
    created_at: int


@dataclass(frozen=True)
class Memory:
    """What a conversation keeps besides its items: the facts kept in every context and the running
    summary of its items up to `summary_upto`."""

    conversation_id: str
    core: list[str]
    summary: str
    summary_upto: int
    is_thread: bool


# ---- checking what a client sends -----------------------------------------------------------------


def check_metadata(metadata: Any) -> dict:
    if metadata is None:
        return {}
    if not isinstance(metadata, dict) or len(metadata) > MAX_METADATA:
        raise InvalidRequestError(f"metadata must be an object of at most {MAX_METADATA} keys")
    for key, value in metadata.items():
        if not isinstance(key, str) or len(key) > 64 or not isinstance(value, str) or len(value) > 512:
            raise InvalidRequestError(
                "metadata keys are strings of at most 64 characters, values strings of at most 512"
            )
    return dict(metadata)


def check_core(core: Any) -> list[str]:
    """The core facts: a list of short strings."""
    if core is None:
        return []
    if (
        not isinstance(core, list)
        or len(core) > MAX_CORE_FACTS
        or not all(isinstance(f, str) and 0 < len(f) <= MAX_FACT_CHARS for f in core)
    ):
        raise InvalidRequestError(
            f"core_memory must be a list of at most {MAX_CORE_FACTS} non-empty strings of at most "
            f"{MAX_FACT_CHARS} characters each"
        )
    return list(core)


def message_items(value: Any, what: str = "input") -> list[tuple[str, str]]:
    """(role, text) of each message in OpenAI's input: a string (one user message) or a list of
    messages whose content is a string or a list of text parts."""
    if isinstance(value, str):
        if not value:
            raise InvalidRequestError(f"{what} is empty; send a message")
        return [("user", value)]
    if not isinstance(value, list) or not value:
        raise InvalidRequestError(f"{what} must be a string or a non-empty list of messages")
    return [_message(item, f"{what}[{i}]") for i, item in enumerate(value)]


def _message(item: Any, where: str) -> tuple[str, str]:
    if not isinstance(item, dict) or item.get("type", "message") != "message":
        kind = item.get("type") if isinstance(item, dict) else type(item).__name__
        raise InvalidRequestError(
            f"{where}: only messages are supported (type 'message' with a role and text), got {kind!r}"
        )
    role = item.get("role")
    if role not in ROLES:
        raise InvalidRequestError(f"{where}.role must be one of {', '.join(ROLES)}, got {role!r}")
    content = item.get("content")
    if isinstance(content, str):
        return role, content
    if not isinstance(content, list):
        raise InvalidRequestError(f"{where}.content must be a string or a list of text parts")
    texts = []
    for j, part in enumerate(content):
        if not isinstance(part, dict) or part.get("type") not in ("input_text", "output_text", "text"):
            kind = part.get("type") if isinstance(part, dict) else type(part).__name__
            raise InvalidRequestError(
                f"{where}.content[{j}]: only text parts (input_text, output_text) are supported, got {kind!r}"
            )
        if not isinstance(part.get("text"), str):
            raise InvalidRequestError(f"{where}.content[{j}].text must be a string")
        texts.append(part["text"])
    return role, "".join(texts)


# ---- objects in OpenAI's shapes -------------------------------------------------------------------


def item_object(item: Item) -> dict:
    part = "output_text" if item.role == "assistant" else "input_text"
    return _item_dict(item.id, item.role, item.text, part)


def _item_dict(item_id: str, role: str, text: str, part: str) -> dict:
    content: dict = {"type": part, "text": text}
    if part == "output_text":
        content["annotations"] = []
    return {"id": item_id, "type": "message", "role": role, "status": "completed", "content": [content]}


def conversation_object(data: AppData, row: sqlite3.Row) -> dict:
    return {
        "id": row["id"],
        "object": "conversation",
        "created_at": row["created_at"],
        "metadata": json.loads(row["metadata"]),
        "core_memory": core_of(data, row),  # LLMasOS: the facts kept in every context
    }


# ---- conversations --------------------------------------------------------------------------------


def create_conversation(
    data: AppData,
    metadata: dict | None = None,
    items: list[tuple[str, str]] = (),
    core: list[str] | None = None,
    *,
    is_thread: bool = False,
) -> dict:
    metadata, core = check_metadata(metadata), check_core(core)
    if len(items) > MAX_ITEMS_PER_CALL:
        raise InvalidRequestError(f"at most {MAX_ITEMS_PER_CALL} items can be added at once")
    conversation_id = new_id("conv_")
    with data.db.transaction() as conn:
        insert_conversation(data, conn, conversation_id, metadata, core, is_thread)
        _insert_items(data, conn, conversation_id, items)
        return conversation_object(data, _row(conn, conversation_id))


def insert_conversation(
    data: AppData,
    conn: sqlite3.Connection,
    conversation_id: str,
    metadata: dict,
    core: list[str],
    is_thread: bool,
) -> None:
    require_room(conn, len(json.dumps(core)), 1, "creating a conversation")
    conn.execute(
        "INSERT INTO conversations (id, metadata, core, summary, summary_upto, is_thread, created_at) "
        "VALUES (?, ?, ?, '', 0, ?, ?)",
        (
            conversation_id,
            json.dumps(metadata),
            sealed_core(data, conversation_id, core),
            int(is_thread),
            int(time.time()),
        ),
    )


def _row(conn: sqlite3.Connection, conversation_id: str, *, threads: bool = False) -> sqlite3.Row:
    row = conn.execute(
        "SELECT * FROM conversations WHERE id = ? AND is_thread <= ?", (conversation_id, int(threads))
    ).fetchone()
    if row is None:
        raise DataNotFoundError(
            f"no conversation {conversation_id!r}; create one with POST /v1/conversations"
        )
    return row


def get_conversation(data: AppData, conversation_id: str) -> dict:
    with data.db.transaction() as conn:
        return conversation_object(data, _row(conn, conversation_id))


def update_conversation(
    data: AppData, conversation_id: str, metadata: dict | None, core: list[str] | None = None
) -> dict:
    with data.db.transaction() as conn:
        _row(conn, conversation_id)
        if metadata is not None:
            conn.execute(
                "UPDATE conversations SET metadata = ? WHERE id = ?",
                (json.dumps(check_metadata(metadata)), conversation_id),
            )
        if core is not None:
            conn.execute(
                "UPDATE conversations SET core = ? WHERE id = ?",
                (sealed_core(data, conversation_id, check_core(core)), conversation_id),
            )
        return conversation_object(data, _row(conn, conversation_id))


def edit_core(data: AppData, conversation_id: str, append: str | None, old: str | None = None) -> list[str]:
    """Append a fact to the core block (`old` None) or replace the fact `old` with `append` (an
    empty `append` removes it); the new core block. One transaction, so two edits never lose one."""
    with data.db.transaction() as conn:
        core = core_of(data, _row(conn, conversation_id))
        if old is None:
            core.append(append)
        elif old not in core:
            raise InvalidRequestError(
                f"the core memory holds no fact {old[:80]!r}; replace one of its facts word for word"
            )
        elif append:
            core[core.index(old)] = append
        else:
            core.remove(old)
        core = check_core(core)
        conn.execute(
            "UPDATE conversations SET core = ? WHERE id = ?",
            (sealed_core(data, conversation_id, core), conversation_id),
        )
        return core


def delete_conversation(data: AppData, conversation_id: str) -> dict:
    """Delete the conversation with its items, their index entries and its responses (cascade)."""
    with data.db.transaction() as conn:
        _row(conn, conversation_id)
        conn.execute("DELETE FROM conversations WHERE id = ?", (conversation_id,))
    return {"id": conversation_id, "object": "conversation.deleted", "deleted": True}


# ---- items ----------------------------------------------------------------------------------------


def _insert_items(
    data: AppData,
    conn: sqlite3.Connection,
    conversation_id: str,
    items: list[tuple[str, str]] | list[Item],
    response_id: str | None = None,
    item_ids: list[str] | None = None,
) -> list[dict]:
    """Append messages (role, text), or copies of items, to the conversation; their objects. The
    text is stored sealed, its words as keyed hashes for recall."""
    added = []
    search_key = data.search_key() if items else b""
    now = int(time.time())
    size = sum(len(i[1] if isinstance(i, tuple) else i.text) for i in items)
    if items:
        require_room(conn, size, 0, f"adding {len(items)} items to {conversation_id}")
    for index, item in enumerate(items):
        if isinstance(item, Item):
            values = (item.id, item.role, item.text, item.tokens, item.tokens_model, item.created_at)
        else:
            item_id = item_ids[index] if item_ids else new_id("msg_")
            values = (item_id, item[0], item[1], None, None, now)
        sealed = seal_item_text(data, values[0], values[2])
        conn.execute(
            "INSERT INTO conversation_items (id, conversation_id, role, text, terms, tokens, tokens_model, "
            "response_id, created_at) VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?)",
            (
                values[0],
                conversation_id,
                values[1],
                sealed,
                hashed_terms(search_key, values[2]),
                values[3],
                values[4],
                response_id,
                values[5],
            ),
        )
        added.append(item_object(Item(0, values[0], values[1], values[2], None, None, values[5])))
    return added


def add_items(data: AppData, conversation_id: str, items: list[tuple[str, str]]) -> dict:
    if not 0 < len(items) <= MAX_ITEMS_PER_CALL:
        raise InvalidRequestError(f"add 1 to {MAX_ITEMS_PER_CALL} items at once")
    with data.db.transaction() as conn:
        _row(conn, conversation_id)
        added = _insert_items(data, conn, conversation_id, items)
    return {
        "object": "list",
        "data": added,
        "first_id": added[0]["id"],
        "last_id": added[-1]["id"],
        "has_more": False,
    }


def list_items(data: AppData, conversation_id: str, request: PageRequest) -> dict:
    with data.db.transaction() as conn:
        _row(conn, conversation_id)
    direction = "ASC" if request.order == "asc" else "DESC"
    rows = _item_rows(data, "conversation_id = ? ORDER BY seq " + direction, (conversation_id,))
    return page([item_object(r) for r in rows], request)


def get_item(data: AppData, conversation_id: str, item_id: str) -> dict:
    with data.db.transaction() as conn:
        _row(conn, conversation_id)
    rows = _item_rows(data, "conversation_id = ? AND id = ?", (conversation_id, item_id))
    if not rows:
        raise DataNotFoundError(f"no item {item_id!r} in conversation {conversation_id!r}")
    return item_object(rows[0])


def delete_item(data: AppData, conversation_id: str, item_id: str) -> dict:
    """Delete one item; the conversation, as OpenAI answers."""
    with data.db.transaction() as conn:
        _row(conn, conversation_id)
        deleted = conn.execute(
            "DELETE FROM conversation_items WHERE conversation_id = ? AND id = ?", (conversation_id, item_id)
        ).rowcount
        if not deleted:
            raise DataNotFoundError(f"no item {item_id!r} in conversation {conversation_id!r}")
        return conversation_object(data, _row(conn, conversation_id))


def _item_rows(data: AppData, where: str, params: tuple) -> list[Item]:
    rows = data.db.execute(
        "SELECT seq, id, role, text, tokens, tokens_model, created_at FROM conversation_items WHERE " + where,
        params,
    )
    return [_opened(data, Item(*tuple(r))) for r in rows]


def _opened(data: AppData, item: Item) -> Item:
    return replace(item, text=open_item_text(data, item.id, item.text))


# ---- memory ---------------------------------------------------------------------------------------


def memory(data: AppData, conversation_id: str) -> Memory:
    """The conversation's core facts and summary (threads included)."""
    with data.db.transaction() as conn:
        row = _row(conn, conversation_id, threads=True)
    return Memory(
        row["id"],
        core_of(data, row),
        summary_of(data, row),
        row["summary_upto"],
        bool(row["is_thread"]),
    )


def items_after(data: AppData, conversation_id: str, seq: int, upto: int | None = None) -> list[Item]:
    """The conversation's items after `seq` (up to `upto`), oldest first."""
    if upto is None:
        return _item_rows(data, "conversation_id = ? AND seq > ? ORDER BY seq", (conversation_id, seq))
    return _item_rows(
        data, "conversation_id = ? AND seq > ? AND seq <= ? ORDER BY seq", (conversation_id, seq, upto)
    )


def recall(data: AppData, conversation_id: str, query: str, before_seq: int, limit: int) -> list[Item]:
    """The items before `before_seq` that best match `query` (BM25), best first."""
    expression = hashed_query(data.search_key(), query)
    if not expression:
        return []
    seqs = [
        r[0]
        for r in data.db.execute(
            # CROSS JOIN: FTS5 first, as in data/search.py's bm25_ranking (SQLite 3.51's planner).
            "SELECT c.seq FROM items_fts CROSS JOIN conversation_items c ON c.seq = items_fts.rowid "
            "WHERE items_fts MATCH ? AND c.conversation_id = ? AND c.seq < ? "
            "ORDER BY bm25(items_fts) LIMIT ?",
            (expression, conversation_id, before_seq, limit),
        )
    ]
    if not seqs:
        return []
    by_seq = {i.seq: i for i in _item_rows(data, f"seq IN ({','.join('?' * len(seqs))})", tuple(seqs))}
    return [by_seq[s] for s in seqs if s in by_seq]


def remember_token_counts(data: AppData, counts: list[tuple[int, int]], model: str) -> None:
    """Keep the token counts of items (seq, tokens) for `model`, so the next turn reads them."""
    if counts:
        with data.db.transaction() as conn:
            conn.executemany(
                "UPDATE conversation_items SET tokens = ?, tokens_model = ? WHERE seq = ?",
                [(tokens, model, seq) for seq, tokens in counts],
            )


def set_summary(data: AppData, conversation_id: str, summary: str, upto: int, expected_upto: int) -> bool:
    """Replace the running summary, if nobody moved it since it was read (`expected_upto`)."""
    with data.db.transaction() as conn:
        return (
            conn.execute(
                "UPDATE conversations SET summary = ?, summary_upto = ? WHERE id = ? AND summary_upto = ?",
                (sealed_summary(data, conversation_id, summary), upto, conversation_id, expected_upto),
            ).rowcount
            == 1
        )
