"""`AppData`: one app's database, opened from the app's identity alone.

The storage API takes the identity from the `App` the kernel authenticated; no method takes an app
name or id from a request, so no call can name another app's rows. Handles are shared per process
(one SQLite connection per app database, as `storage.db.Database` is thread-safe).

Encryption at rest sits at this boundary. The whole database is SQLCipher, keyed by a key derived
from the app's data key (`security/data_keys.py`): documents' chunks, their FTS5 index, their
vectors and every other row are ciphertext on disk, pages of the write-ahead log included, while
FTS5 and vector search run unchanged on the decrypted pages; `open_database` is the only way it is
opened, and converts a plaintext file from an earlier version on first open. On top of that,
key-value values, uploaded files, conversation items, core facts, summaries, stored responses and
the pseudonym vault are sealed value by value by `seal_*`/`open_*` below (so they stay sealed in an
export or a copied row; conversation recall indexes keyed hashes of words: `search_terms.py`), and
the saved HNSW graphs (which hold the vectors) are sealed files. Deleting the app destroys the data
key, and with it every key derived from it.
"""

from __future__ import annotations

import threading
import uuid
from dataclasses import dataclass
from pathlib import Path

from llmasos.data.index import IndexCache, remove_saved_graphs
from llmasos.data.schema import app_folder, open_database, remove_app_folder
from llmasos.security.data_keys import data_keys
from llmasos.storage.db import Database


@dataclass
class AppData:
    owner: str  # App.identity
    db: Database

    def seal_bytes(self, plain: bytes, purpose: str) -> bytes:
        """`plain` encrypted under this app's data key, bound to `purpose` (e.g. `file:<id>`)."""
        return data_keys().seal_bytes(self.owner, plain, purpose)

    def open_bytes(self, stored: bytes, purpose: str) -> bytes:
        """What `seal_bytes` sealed (bytes stored before encryption are returned as they are)."""
        return data_keys().open_bytes(self.owner, stored, purpose)

    def seal_text(self, plain: str, purpose: str) -> str:
        return data_keys().seal_text(self.owner, plain, purpose)

    def open_text(self, stored: str, purpose: str) -> str:
        return data_keys().open_text(stored, purpose)

    def search_key(self) -> bytes:
        """The key that hashes this app's indexed words (data/search_terms.py)."""
        return data_keys().search_key(self.owner)


_open: dict[str, AppData] = {}
_lock = threading.Lock()
#: Vector indexes of every open app, keyed by (owner, store id).
indexes = IndexCache()


def index_folder(owner: str) -> Path:
    """Where the app's saved vector index graphs live (`index.SavedGraph`)."""
    return app_folder(owner) / "indexes"


def forget_store_index(owner: str, store_id: str) -> None:
    """Drop a deleted store's vector index, in memory and on disk."""
    indexes.discard((owner, store_id))
    remove_saved_graphs(index_folder(owner), store_id)


def app_data(owner: str) -> AppData:
    """The data of the app whose identity is `owner` (`App.identity`), created empty on first use."""
    with _lock:
        data = _open.get(owner)
        # A home switched under a running process (tests) must not keep the old file.
        if data is None or data.db.path != app_folder(owner) / "data.db" or not data.db.path.exists():
            data = AppData(owner, open_database(owner, data_keys().database_key(owner)))
            _open[owner] = data
        return data


def close_app_data(owner: str) -> None:
    """Close this process's handle on the app's database (the next `app_data` opens it again)."""
    with _lock:
        data = _open.pop(owner, None)
        if data is not None:
            data.db.close()


def close_open_app_data() -> None:
    """Close every app database this process has open and drop their vector indexes from memory (a
    closing kernel's; the next `app_data` opens one again)."""
    with _lock:
        opened = list(_open.values())
        _open.clear()
        for data in opened:
            indexes.drop(data.owner)
    for data in opened:
        data.db.close()


def delete_app_data(owner: str) -> bool:
    """Remove every file, store, chunk, vector and key of an app, and destroy its data key, so that
    what it sealed anywhere (the audit log, workflow runs, disk blocks) is unreadable; whether it had
    any data."""
    with _lock:
        data = _open.pop(owner, None)
        if data is not None:
            data.db.close()
        indexes.drop(owner)
        shredded = data_keys().shred(owner)
        return remove_app_folder(owner) or shredded


def new_id(prefix: str) -> str:
    return f"{prefix}{uuid.uuid4().hex[:24]}"
