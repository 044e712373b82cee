"""Where an app's pseudonym vault (`privacy/pseudonyms.py`) is kept across restarts: the app's own
database, one row per placeholder, its value sealed under the app's data key (bound to the
placeholder, so values cannot be swapped between rows). Deleting the app removes the rows with its
folder and destroys the key, so no copy of a value stays readable.

Without it the vault lived in memory only: after a restart, text stored with placeholders (a
conversation's items, its summary, documents) could no longer be restored, and the first new value
would take `<PERSON_1>` again, restoring old text to the wrong person.
"""

from __future__ import annotations

import time

from llmasos.data.app_data import AppData, app_data

PURPOSE = "pseudonym"


class PseudonymStore:
    """The `VaultStore` of one app."""

    def __init__(self, data: AppData) -> None:
        self.data = data

    def load(self) -> list[tuple[str, str]]:
        rows = self.data.db.execute("SELECT placeholder, value FROM pseudonyms ORDER BY added_at")
        return [(r["placeholder"], self.data.open_text(r["value"], _purpose(r["placeholder"]))) for r in rows]

    def add(self, placeholder: str, value: str) -> None:
        sealed = self.data.seal_text(value, _purpose(placeholder))
        self.data.db.execute(
            "INSERT OR REPLACE INTO pseudonyms (placeholder, value, added_at) VALUES (?, ?, ?)",
            (placeholder, sealed, time.time()),
        )


def pseudonym_store(owner: str) -> PseudonymStore:
    """The vault store of the app whose identity is `owner`."""
    return PseudonymStore(app_data(owner))


def _purpose(placeholder: str) -> str:
    return f"{PURPOSE}:{placeholder}"
