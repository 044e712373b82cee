"""Each app's data key (envelope encryption): a random AES-256 key per app, kept only wrapped by the
master key, in `$LLMASOS_HOME/keys/data_keys.db`.

What an app stores through it (key-value values, uploaded files, audit prompts and outputs, workflow
run data) is sealed with AES-GCM under the app's data key, bound to the app and to what the value is
(its purpose), so a value copied into another app's rows or another column does not open.
Deleting an app destroys its data key (`shred`): the row is overwritten (`secure_delete`) and the
write-ahead log truncated, after which any copy of its data left on disk (freed database pages, the
audit log, a backup) is ciphertext that nothing can open: crypto-shredding.

`rotate` re-wraps every data key under a new master key in one transaction; running servers keep the
data keys they have unwrapped and pick up the new master key when they next unwrap one.
"""

from __future__ import annotations

import base64
import logging
import secrets
import threading
import time
from pathlib import Path

from cryptography.exceptions import InvalidTag
from cryptography.hazmat.primitives import hashes
from cryptography.hazmat.primitives.ciphers.aead import AESGCM
from cryptography.hazmat.primitives.kdf.hkdf import HKDF

from llmasos.errors import DecryptionError
from llmasos.security import master_key
from llmasos.security.sealed_file import unwrap_key, wrap_key
from llmasos.storage.db import Database

log = logging.getLogger(__name__)

#: Sealed text starts with this; anything else is a value written before encryption (read as is).
TEXT_PREFIX = "llmenc1:"
BYTES_PREFIX = b"LLMENC1"
NONCE_BYTES = 12
SEARCH_KEY_INFO = b"llmasos search terms v1"
DATABASE_KEY_INFO = b"llmasos app database v1"  # the SQLCipher key of the app's data.db
AUDIT_PURPOSE = "audit"  # prompts and outputs in the audit log
SHREDDED = "[unreadable: the app's data key was destroyed when the app was deleted]"


def _create_table(conn) -> None:
    conn.execute(
        """CREATE TABLE data_keys (
            owner TEXT PRIMARY KEY,        -- App.identity
            master_key_id TEXT NOT NULL,   -- which master key wraps it
            wrapped BLOB NOT NULL,         -- nonce + AES-GCM(master key, data key, aad = owner)
            created_at REAL NOT NULL
        )"""
    )


class DataKeys:
    """The data keys of one `$LLMASOS_HOME`, with the unwrapped ones cached for this process."""

    def __init__(self, path: Path | None = None) -> None:
        self.path = Path(path or master_key.keys_dir() / "data_keys.db")
        self.db = Database(self.path, [_create_table])
        # Overwrite deleted rows with zeros, so a shredded key leaves no copy in free pages.
        self.db.execute("PRAGMA secure_delete=ON")
        self._cache: dict[str, AESGCM] = {}
        self._search_keys: dict[str, bytes] = {}  # owner -> HKDF(data key): hashes indexed terms
        self._database_keys: dict[str, bytes] = {}  # owner -> HKDF(data key): encrypts its data.db
        self._lock = threading.Lock()

    # ---- keys ----------------------------------------------------------------------------------

    def cipher(self, owner: str, *, create: bool = True) -> AESGCM | None:
        """The AEAD of `owner`'s data key (made on first use with `create`); None if it has none."""
        with self._lock:
            cached = self._cache.get(owner)
            if cached is not None:
                return cached
            row = self.db.execute("SELECT master_key_id, wrapped FROM data_keys WHERE owner = ?", (owner,))
            if row:
                key = unwrap_key(
                    bytes(row[0]["wrapped"]),
                    row[0]["master_key_id"],
                    owner.encode(),
                    f"the data key of {owner}",
                )
            elif create:
                key = self._create(owner)
            else:
                return None
            self._cache[owner] = AESGCM(key)
            self._search_keys[owner] = _derive(key, SEARCH_KEY_INFO)
            self._database_keys[owner] = _derive(key, DATABASE_KEY_INFO)
            return self._cache[owner]

    def search_key(self, owner: str) -> bytes:
        """A key derived from `owner`'s data key (HKDF, so neither reveals the other) that keys the
        hashes of indexed words (`data/search_terms.py`); destroyed with the data key."""
        self.cipher(owner)
        with self._lock:
            return self._search_keys[owner]

    def database_key(self, owner: str) -> bytes:
        """The SQLCipher key of `owner`'s database (HKDF of its data key, made on first use):
        destroyed with the data key, so a shredded app's database pages are ciphertext for good."""
        self.cipher(owner)
        with self._lock:
            return self._database_keys[owner]

    def _create(self, owner: str) -> bytes:
        master = master_key.current_key(create=True)
        key = AESGCM.generate_key(bit_length=256)
        self.db.execute(
            "INSERT INTO data_keys (owner, master_key_id, wrapped, created_at) VALUES (?, ?, ?, ?)",
            (owner, master.key_id, wrap_key(master, key, owner.encode()), time.time()),
        )
        return key

    def has_key(self, owner: str) -> bool:
        return bool(self.db.execute("SELECT 1 FROM data_keys WHERE owner = ?", (owner,)))

    def shred(self, owner: str) -> bool:
        """Destroy `owner`'s data key for good; whether it had one."""
        with self._lock:
            self._cache.pop(owner, None)
            self._search_keys.pop(owner, None)
            self._database_keys.pop(owner, None)
            with self.db.transaction() as conn:
                gone = conn.execute("DELETE FROM data_keys WHERE owner = ?", (owner,)).rowcount > 0
            # The WAL still holds the page as it was before the delete: fold it in and empty it.
            self.db.execute("PRAGMA wal_checkpoint(TRUNCATE)")
        return gone

    def rotate(self, new: master_key.MasterKey) -> int:
        """Re-wrap every data key under `new` in one transaction; how many there were."""
        with self._lock, self.db.transaction() as conn:
            rows = conn.execute("SELECT owner, master_key_id, wrapped FROM data_keys").fetchall()
            for row in rows:
                owner = row["owner"]
                key = unwrap_key(
                    bytes(row["wrapped"]), row["master_key_id"], owner.encode(), f"the data key of {owner}"
                )
                conn.execute(
                    "UPDATE data_keys SET master_key_id = ?, wrapped = ? WHERE owner = ?",
                    (new.key_id, wrap_key(new, key, owner.encode()), owner),
                )
        self.db.execute("PRAGMA wal_checkpoint(TRUNCATE)")
        return len(rows)

    def master_key_ids(self) -> dict[str, int]:
        rows = self.db.execute("SELECT master_key_id, COUNT(*) AS n FROM data_keys GROUP BY master_key_id")
        return {r["master_key_id"]: r["n"] for r in rows}

    # ---- values ---------------------------------------------------------------------------------

    def seal_bytes(self, owner: str, data: bytes, purpose: str) -> bytes:
        cipher = self.cipher(owner)
        assert cipher is not None
        nonce = secrets.token_bytes(NONCE_BYTES)
        return BYTES_PREFIX + nonce + cipher.encrypt(nonce, data, _aad(owner, purpose))

    def open_bytes(self, owner: str, data: bytes, purpose: str) -> bytes:
        """The plaintext of `seal_bytes`'s output; bytes without the prefix are returned as they are."""
        if not data.startswith(BYTES_PREFIX):
            return data
        body = data[len(BYTES_PREFIX) :]
        return self._open(owner, body, purpose)

    def seal_text(self, owner: str, text: str, purpose: str) -> str:
        """`text` sealed as `llmenc1:<owner>:<base64>` (the owner is public: it names the key)."""
        body = self.seal_bytes(owner, text.encode(), purpose)[len(BYTES_PREFIX) :]
        return f"{TEXT_PREFIX}{owner}:{base64.b64encode(body).decode()}"

    def open_text(self, value: str, purpose: str) -> str:
        """The plaintext of `seal_text`'s output (text without the prefix is returned as it is)."""
        if not value.startswith(TEXT_PREFIX):
            return value
        owner, _, body = value[len(TEXT_PREFIX) :].rpartition(":")
        return self._open(owner, base64.b64decode(body), purpose).decode()

    def _open(self, owner: str, body: bytes, purpose: str) -> bytes:
        cipher = self.cipher(owner, create=False)
        if cipher is None:
            raise DecryptionError(
                f"the stored value {purpose!r} of {owner} is unreadable: the app's data key was destroyed "
                "when the app was deleted, so it cannot be recovered; write it again"
            )
        try:
            return cipher.decrypt(body[:NONCE_BYTES], body[NONCE_BYTES:], _aad(owner, purpose))
        except InvalidTag:
            raise DecryptionError(
                f"the stored value {purpose!r} of {owner} failed authentication (changed on disk, or moved "
                "from elsewhere) and was not used: restore the app's data from a backup, or delete the "
                "value and write it again"
            ) from None

    def close(self) -> None:
        self.db.close()


def open_text_or_note(value: str | None, purpose: str) -> str | None:
    """`open_text`, with a note in place of data whose key was shredded (for listings). Text that was
    never sealed is returned as it is, without touching the key store."""
    if value is None or not value.startswith(TEXT_PREFIX):
        return value
    try:
        return data_keys().open_text(value, purpose)
    except DecryptionError:
        return SHREDDED


def _derive(key: bytes, info: bytes) -> bytes:
    """A 256-bit key for one use (`info`) derived from a data key; neither reveals the other."""
    return HKDF(algorithm=hashes.SHA256(), length=32, salt=None, info=info).derive(key)


def _aad(owner: str, purpose: str) -> bytes:
    return f"{owner}\0{purpose}".encode()


_instances: dict[Path, DataKeys] = {}
_instances_lock = threading.Lock()


def data_keys() -> DataKeys:
    """This process's `DataKeys` of the current `$LLMASOS_HOME` (a home switched under a test is followed)."""
    path = master_key.keys_dir() / "data_keys.db"
    with _instances_lock:
        keys = _instances.get(path)
        if keys is None or not path.exists():
            keys = _instances[path] = DataKeys(path)
        return keys


def close_data_keys() -> None:
    """Close every key store this process opened (a closing kernel's; the next `data_keys()` opens
    one again)."""
    with _instances_lock:
        stores = list(_instances.values())
        _instances.clear()
    for keys in stores:
        keys.close()
