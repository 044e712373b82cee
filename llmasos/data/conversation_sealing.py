"""How a conversation's text is kept at rest: sealed under the app's data key (AES-GCM), each value
bound to what it is, so a sealed value copied into another row or column does not open:

- an item's text: `item:<item id>` (a forked thread's copy keeps its item's id, and is sealed anew);
- the core facts (a JSON list): `core:<conversation id>`;
- the running summary: `summary:<conversation id>` (empty: none yet, stored as '').

Text stored before sealing (no `llmenc1:` prefix) is read as it is. Recall cannot read sealed text:
it indexes keyed hashes of the words instead (`search_terms.py`).
"""

from __future__ import annotations

import json
import sqlite3

from llmasos.data.app_data import AppData


def seal_item_text(data: AppData, item_id: str, text: str) -> str:
    return data.seal_text(text, f"item:{item_id}")


def open_item_text(data: AppData, item_id: str, stored: str) -> str:
    return data.open_text(stored, f"item:{item_id}")


def core_of(data: AppData, row: sqlite3.Row) -> list[str]:
    """The core facts of a conversation's row, opened."""
    return json.loads(data.open_text(row["core"], f"core:{row['id']}"))


def sealed_core(data: AppData, conversation_id: str, core: list[str]) -> str:
    return data.seal_text(json.dumps(core), f"core:{conversation_id}")


def summary_of(data: AppData, row: sqlite3.Row) -> str:
    """The running summary of a conversation's row, opened ('' when there is none)."""
    return data.open_text(row["summary"], f"summary:{row['id']}") if row["summary"] else ""


def sealed_summary(data: AppData, conversation_id: str, summary: str) -> str:
    return data.seal_text(summary, f"summary:{conversation_id}") if summary else ""
