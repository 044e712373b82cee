"""`AppData`: one app's database, opened from the app's identity alone.

The storage API takes the identity from the `App` the kernel authenticated; no method takes an app
name or id from a request, so no call can name another app's rows. Handles are shared per process
(one SQLite connection per app database, as `storage.db.Database` is thread-safe).
"""

from __future__ import annotations

import threading
import uuid
from dataclasses import dataclass

from llmasos.data.index import IndexCache
from llmasos.data.schema import app_folder, open_database, remove_app_folder
from llmasos.storage.db import Database


@dataclass
class AppData:
    owner: str  # App.identity
    db: Database


_open: dict[str, AppData] = {}
_lock = threading.Lock()
#: Vector indexes of every open app, keyed by (owner, store id).
indexes = IndexCache()


def app_data(owner: str) -> AppData:
    """The data of the app whose identity is `owner` (`App.identity`), created empty on first use."""
    with _lock:
        data = _open.get(owner)
        # A home switched under a running process (tests) must not keep the old file.
        if data is None or data.db.path != app_folder(owner) / "data.db" or not data.db.path.exists():
            data = AppData(owner, open_database(owner))
            _open[owner] = data
        return data


def delete_app_data(owner: str) -> bool:
    """Remove every file, store, chunk, vector and key of an app; whether it had any."""
    with _lock:
        data = _open.pop(owner, None)
        if data is not None:
            data.db.close()
        indexes.drop(owner)
        return remove_app_folder(owner)


def new_id(prefix: str) -> str:
    return f"{prefix}{uuid.uuid4().hex[:24]}"
