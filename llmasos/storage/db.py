"""SQLite databases under $LLMASOS_HOME: WAL mode, private file modes, named migrations.

Each database is a file with an ordered list of migrations (functions that take a connection);
`user_version` records how many have run, so opening an old file upgrades it in place. Given a key,
the file is a SQLCipher database (`encrypted_db.py`): every page on disk is ciphertext, and a page
that fails authentication is a DecryptionError, never rows.
"""

from __future__ import annotations

import sqlite3
import threading
from collections.abc import Callable, Sequence
from pathlib import Path

from llmasos.storage import encrypted_db
from llmasos.storage.files import touch_private

Migration = Callable[[sqlite3.Connection], None]


class Database:
    """One SQLite file, safe to share between threads (one connection, one lock)."""

    def __init__(self, path: Path, migrations: Sequence[Migration], *, key: bytes | None = None) -> None:
        """`key`: 32 bytes that encrypt the file with SQLCipher (None: plain SQLite)."""
        self.path = Path(path)
        self.encrypted = key is not None
        # Created 0600 before SQLite opens it: its -wal and -shm files then take the same mode.
        touch_private(self.path)
        self._lock = threading.RLock()
        if key is None:
            self._conn = sqlite3.connect(self.path, check_same_thread=False, isolation_level=None)
            self._conn.row_factory = sqlite3.Row
        else:
            self._conn = encrypted_db.connect(self.path, key)
            self._conn.row_factory = encrypted_db.sqlcipher.Row
        self._conn.execute("PRAGMA journal_mode=WAL")
        self._conn.execute("PRAGMA foreign_keys=ON")
        self._conn.execute("PRAGMA busy_timeout=5000")
        self._migrate(migrations)

    def _migrate(self, migrations: Sequence[Migration]) -> None:
        with self._lock:
            version = self._conn.execute("PRAGMA user_version").fetchone()[0]
            for index, migration in enumerate(migrations[version:], start=version + 1):
                with self.transaction() as conn:
                    migration(conn)
                    conn.execute(f"PRAGMA user_version={index}")

    def transaction(self) -> _Transaction:
        """`with db.transaction() as conn:` runs its statements atomically."""
        return _Transaction(self)

    def execute(self, sql: str, params: Sequence | dict = ()) -> list[sqlite3.Row]:
        with self._lock:
            try:
                return self._conn.execute(sql, params).fetchall()
            except encrypted_db.sqlcipher.DatabaseError as err:
                if encrypted_db.is_unreadable(err):
                    raise encrypted_db.unreadable(self.path, err) from None
                raise

    def change_stamp(self, *, blocking: bool = True) -> tuple[int, int] | None:
        """A value that changes whenever the file's rows may have: a commit by any other connection,
        of this process or another (`PRAGMA data_version`), or a row this connection changed
        (`total_changes`). Equal stamps: nothing was written in between. None when `blocking` is
        False and another thread is using the connection."""
        if not self._lock.acquire(blocking):
            return None
        try:
            return self._conn.execute("PRAGMA data_version").fetchone()[0], self._conn.total_changes
        finally:
            self._lock.release()

    def close(self) -> None:
        with self._lock:
            self._conn.close()


class _Transaction:
    def __init__(self, db: Database) -> None:
        self.db = db

    def __enter__(self) -> sqlite3.Connection:
        self.db._lock.acquire()
        self.db._conn.execute("BEGIN IMMEDIATE")
        return self.db._conn

    def __exit__(self, exc_type, exc, tb) -> None:
        try:
            self.db._conn.execute("COMMIT" if exc_type is None else "ROLLBACK")
        finally:
            self.db._lock.release()
        if exc is not None and self.db.encrypted and encrypted_db.is_unreadable(exc):
            raise encrypted_db.unreadable(self.db.path, exc) from None
