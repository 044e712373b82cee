"""An app's stored responses (OpenAI's `/v1/responses` with `store`), and where a response's
messages go: the client's conversation, or the thread of its `previous_response_id` chain.

A chain continues in its thread while it grows at the thread's end; a response that continues an
earlier point (two answers chained to the same response) forks a new thread holding a copy of the
history up to that point, so each chain reads exactly its own past.
"""

from __future__ import annotations

import json
import sqlite3
import time
from dataclasses import dataclass

from llmasos.data import conversations as conv
from llmasos.data.app_data import AppData, new_id
from llmasos.data.conversation_sealing import core_of, sealed_summary, summary_of
from llmasos.data.pages import PageRequest, page
from llmasos.errors import DataNotFoundError


@dataclass(frozen=True)
class Place:
    """Where a new response reads its history from and writes its messages to.

    `conversation_id` None: a fresh thread (made when the response is stored). `upto`: the last item
    of the history (None: the conversation's end); a chain that moved on since is forked there."""

    conversation_id: str | None
    upto: int | None = None
    is_chain: bool = False


@dataclass(frozen=True)
class Stored:
    conversation_id: str | None
    input_items: list[dict]
    output_items: list[dict]


def new_response_id() -> str:
    return new_id("resp_")


def new_message_id() -> str:
    return new_id("msg_")


def place_after(data: AppData, previous_response_id: str) -> Place:
    rows = data.db.execute(
        "SELECT conversation_id, last_seq FROM responses WHERE id = ?", (previous_response_id,)
    )
    if not rows:
        raise DataNotFoundError(
            f"no stored response {previous_response_id!r} (it was made with store=false, deleted, or "
            "is another app's); send the whole conversation in input instead"
        )
    return Place(rows[0][0], rows[0][1], is_chain=True)


def place_in(data: AppData, conversation_id: str) -> Place:
    conv.get_conversation(data, conversation_id)  # 404 for an unknown one (or a thread)
    return Place(conversation_id)


def save_exchange(
    data: AppData,
    place: Place,
    response_id: str,
    inputs: list[tuple[str, str]],
    output: str,
    output_id: str,
    body: dict | None,
    context: dict,
) -> Stored:
    """Write the input messages and the answer (one transaction: both or neither), and the response
    object when `body` is given (store=true). Nothing is written for an unstored response outside a
    conversation."""
    if body is None and not (place.conversation_id and not place.is_chain):
        return Stored(None, [], [])
    with data.db.transaction() as conn:
        conversation_id = _writable(data, conn, place)
        added = conv._insert_items(data, conn, conversation_id, inputs, response_id)
        answer = conv._insert_items(
            data, conn, conversation_id, [("assistant", output)], response_id, [output_id]
        )
        if body is not None:
            last_seq = conn.execute(
                "SELECT max(seq) FROM conversation_items WHERE conversation_id = ?", (conversation_id,)
            ).fetchone()[0]
            conn.execute(
                "INSERT INTO responses (id, conversation_id, last_seq, body, context, input_item_ids, "
                "created_at) VALUES (?, ?, ?, ?, ?, ?, ?)",
                (
                    response_id,
                    conversation_id,
                    last_seq,
                    data.seal_text(json.dumps(body), f"response:{response_id}:body"),
                    data.seal_text(json.dumps(context), f"response:{response_id}:context"),
                    json.dumps([i["id"] for i in added]),
                    int(time.time()),
                ),
            )
    return Stored(conversation_id, added, answer)


def _writable(data: AppData, conn: sqlite3.Connection, place: Place) -> str:
    """The conversation the exchange goes to: the client's, the chain's thread, or a new thread."""
    if place.conversation_id is None:
        thread = new_id("conv_")
        conv.insert_conversation(data, conn, thread, {}, [], True)
        return thread
    if not place.is_chain:
        return place.conversation_id
    row = conn.execute(
        "SELECT is_thread, (SELECT max(seq) FROM conversation_items WHERE conversation_id = c.id) "
        "FROM conversations c WHERE id = ?",
        (place.conversation_id,),
    ).fetchone()
    if row is not None and row[0] and row[1] == place.upto:
        return place.conversation_id  # the chain grows at its thread's end
    return _fork(data, conn, place)


def _fork(data: AppData, conn: sqlite3.Connection, place: Place) -> str:
    """A new thread with a copy of the history up to `place.upto` (and the summary, if it covers no
    more than that)."""
    source = conn.execute("SELECT * FROM conversations WHERE id = ?", (place.conversation_id,)).fetchone()
    if source is None:
        raise DataNotFoundError("the conversation of the previous response was deleted meanwhile")
    thread = new_id("conv_")
    conv.insert_conversation(data, conn, thread, {}, core_of(data, source), True)
    rows = conn.execute(
        "SELECT seq, id, role, text, tokens, tokens_model, created_at FROM conversation_items "
        "WHERE conversation_id = ? AND seq <= ? ORDER BY seq",
        (place.conversation_id, place.upto),
    ).fetchall()
    items = [conv._opened(data, conv.Item(*tuple(r))) for r in rows]
    conv._insert_items(data, conn, thread, items)
    if 0 < source["summary_upto"] <= (place.upto or 0):
        covered = sum(1 for i in items if i.seq <= source["summary_upto"])
        new_seqs = [
            r[0]
            for r in conn.execute(
                "SELECT seq FROM conversation_items WHERE conversation_id = ? ORDER BY seq", (thread,)
            )
        ]
        conn.execute(
            "UPDATE conversations SET summary = ?, summary_upto = ? WHERE id = ?",
            (sealed_summary(data, thread, summary_of(data, source)), new_seqs[covered - 1], thread),
        )
    return thread


def get_response(data: AppData, response_id: str) -> dict:
    return json.loads(
        data.open_text(_response_row(data, response_id)["body"], f"response:{response_id}:body")
    )


def response_context(data: AppData, response_id: str) -> dict:
    """What went into the model's context for the response, and why."""
    return {
        "id": response_id,
        "object": "response.context",
        **json.loads(
            data.open_text(_response_row(data, response_id)["context"], f"response:{response_id}:context")
        ),
    }


def response_input_items(data: AppData, response_id: str, request: PageRequest) -> dict:
    row = _response_row(data, response_id)
    ids = json.loads(row["input_item_ids"])
    marks = ",".join("?" * len(ids))
    items = conv._item_rows(
        data, f"conversation_id = ? AND id IN ({marks}) ORDER BY seq", (row["conversation_id"], *ids)
    )
    objects = [conv.item_object(i) for i in items]
    return page(objects if request.order == "asc" else objects[::-1], request)


def delete_response(data: AppData, response_id: str) -> dict:
    """Delete the response; its thread too when no other response continues in it."""
    with data.db.transaction() as conn:
        row = conn.execute("SELECT conversation_id FROM responses WHERE id = ?", (response_id,)).fetchone()
        if row is None:
            raise DataNotFoundError(_missing(response_id))
        conn.execute("DELETE FROM responses WHERE id = ?", (response_id,))
        conn.execute(
            "DELETE FROM conversations WHERE id = ? AND is_thread = 1 AND NOT EXISTS "
            "(SELECT 1 FROM responses WHERE conversation_id = ?)",
            (row[0], row[0]),
        )
    return {"id": response_id, "object": "response", "deleted": True}


def _response_row(data: AppData, response_id: str) -> sqlite3.Row:
    rows = data.db.execute("SELECT * FROM responses WHERE id = ?", (response_id,))
    if not rows:
        raise DataNotFoundError(_missing(response_id))
    return rows[0]


def _missing(response_id: str) -> str:
    return f"no stored response {response_id!r}; responses made with store=false are not kept"
