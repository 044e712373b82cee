"""An app's data written out as plain files in a folder, readable without LLMasOS:

    manifest.json            the app, when, what was exported and how many of each
    files.jsonl              the uploaded files' objects; their original bytes in files/<id>/<name>
    vector_stores.jsonl      each store's object, with its files (status, attributes)
    chunks.jsonl             the chunks each file was cut into (store, file, ordinal, text, span, heading)
    conversations.jsonl      each conversation (and response thread): metadata, core facts, summary
    conversations/<id>.jsonl its items in order (id, role, text, created_at)
    responses.jsonl          the stored responses (OpenAI's objects)
    kv.jsonl                 the key-value store (key, JSON value, expiry)

Everything is read through the same functions the system calls use (sealed values opened with the
app's data key), from the app's own database only. Files are 0600 and folders 0700, as under
`$LLMASOS_HOME`: an export holds the app's private data.
"""

from __future__ import annotations

import json
import os
import re
import time
from collections.abc import Callable, Iterable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from llmasos.data import conversations as conv
from llmasos.data import files as files_api
from llmasos.data import kv as kv_api
from llmasos.data.app_data import AppData
from llmasos.data.conversation_sealing import summary_of
from llmasos.errors import DataNotFoundError, InvalidRequestError

FORMAT = "llmasos-app-export/1"
_SAFE_NAME = re.compile(r"[^A-Za-z0-9._-]+")


@dataclass(frozen=True)
class Restore:
    """How stored data reads back for its owner (the privacy layer's pseudonyms restored); identity
    when the app keeps its data as given."""

    text: Callable[[str], str] = lambda text: text
    bytes: Callable[[bytes], bytes] = lambda content: content
    value: Callable[[Any], Any] = lambda value: value


def export_app_data(data: AppData, app_name: str, folder: Path, restore: Restore | None = None) -> dict:
    """Write the app's data into `folder` (created; it must be empty if it exists); the manifest."""
    folder, restore = Path(folder), restore or Restore()
    if folder.exists() and any(folder.iterdir()):
        raise InvalidRequestError(f"{folder} is not empty; export into a new or empty folder")
    _make_folder(folder)
    counts = {
        "files": _files(data, folder, restore),
        "vector_stores": _stores(data, folder),
        "chunks": _chunks(data, folder, restore),
        **_conversations(data, folder, restore),
        "kv": _kv(data, folder, restore),
    }
    manifest = {"format": FORMAT, "app": app_name, "exported_at": int(time.time()), "counts": counts}
    write_json(folder / "manifest.json", manifest)
    return manifest


def write_jsonl(path: Path, rows: Iterable[dict]) -> int:
    """Write one JSON object a line (0600); how many."""
    count = 0
    with _private(path, "w") as out:
        for row in rows:
            out.write(json.dumps(row, ensure_ascii=False) + "\n")
            count += 1
    return count


def write_json(path: Path, value: dict) -> None:
    with _private(path, "w") as out:
        json.dump(value, out, ensure_ascii=False, indent=2)


def _private(path: Path, mode: str):
    descriptor = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
    return open(descriptor, mode, encoding=None if "b" in mode else "utf-8")


def _make_folder(path: Path) -> None:
    path.mkdir(mode=0o700, parents=True, exist_ok=True)
    path.chmod(0o700)


def _files(data: AppData, folder: Path, restore: Restore) -> int:
    rows = data.db.execute(
        "SELECT id, filename, purpose, bytes, created_at FROM files ORDER BY created_at, id"
    )
    objects = [files_api.file_object(r) for r in rows]
    for obj in objects:
        name, content = files_api.file_content(data, obj["id"])
        place = folder / "files" / obj["id"]
        _make_folder(place)
        with _private(place / (_SAFE_NAME.sub("_", name).lstrip(".") or "file"), "wb") as out:
            out.write(restore.bytes(content))
    return write_jsonl(folder / "files.jsonl", objects)


def _stores(data: AppData, folder: Path) -> int:
    from llmasos.data import vector_stores as stores_api

    rows = data.db.execute("SELECT id FROM vector_stores ORDER BY created_at, id")
    out = []
    for row in rows:
        store = stores_api.get_store(data, row["id"])
        attached = data.db.execute(
            "SELECT * FROM store_files WHERE store_id = ? ORDER BY created_at, file_id", (row["id"],)
        )
        store["files"] = [stores_api.store_file_object(f) for f in attached]
        out.append(store)
    return write_jsonl(folder / "vector_stores.jsonl", out)


def _chunks(data: AppData, folder: Path, restore: Restore) -> int:
    rows = data.db.execute(
        'SELECT store_id, file_id, ordinal, text, start, "end", heading, meta, model FROM chunks '
        "ORDER BY store_id, file_id, ordinal"
    )
    chunks = (
        {
            "store_id": r["store_id"],
            "file_id": r["file_id"],
            "ordinal": r["ordinal"],
            "text": restore.text(r["text"]),
            "span": [r["start"], r["end"]],
            "heading": r["heading"],
            "metadata": json.loads(r["meta"]),
            "embedding_model": r["model"],
        }
        for r in rows
    )
    return write_jsonl(folder / "chunks.jsonl", chunks)


def _conversations(data: AppData, folder: Path, restore: Restore) -> dict:
    rows = data.db.execute("SELECT * FROM conversations ORDER BY created_at, id")
    listed = []
    items = 0
    _make_folder(folder / "conversations")
    for row in rows:
        conversation = conv.conversation_object(data, row)
        listed.append(
            {
                **conversation,
                "core_memory": [restore.text(fact) for fact in conversation["core_memory"]],
                "summary": restore.text(summary_of(data, row)),
                "is_thread": bool(row["is_thread"]),
            }
        )
        rows_of = conv.items_after(data, row["id"], 0)
        items += write_jsonl(
            folder / "conversations" / f"{row['id']}.jsonl",
            (
                {"id": i.id, "role": i.role, "text": restore.text(i.text), "created_at": i.created_at}
                for i in rows_of
            ),
        )
    responses = data.db.execute("SELECT id, body FROM responses ORDER BY created_at, id")
    bodies = (json.loads(data.open_text(r["body"], f"response:{r['id']}:body")) for r in responses)
    return {
        "conversations": write_jsonl(folder / "conversations.jsonl", listed),
        "conversation_items": items,
        "responses": write_jsonl(folder / "responses.jsonl", bodies),
    }


def _kv(data: AppData, folder: Path, restore: Restore) -> int:
    entries, after = [], None
    while True:
        listed = kv_api.kv_list(data, "", kv_api.MAX_LIST, after)
        for entry in listed["data"]:
            try:
                stored = kv_api.kv_get(data, entry["key"])
                entries.append({**stored, "value": restore.value(stored["value"])})
            except DataNotFoundError:  # expired between the listing and the read
                continue
        if not listed["has_more"] or not listed["data"]:
            break
        after = listed["data"][-1]["key"]
    return write_jsonl(folder / "kv.jsonl", entries)
