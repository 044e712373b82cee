"""What makes the audit log tamper-evident: a secret key, a MAC per row, and an anchor outside the database.

- The key (`$LLMASOS_HOME/audit.key`, 32 random bytes, mode 0600) is kept apart from `audit.db`, so
  whoever can edit the database but not read the key cannot forge or recompute a row: each row's
  `hash` is HMAC-SHA256(key, previous row's hash + the row's id and fields).
- The anchor (`$LLMASOS_HOME/audit.anchor`) records the chain's head (last row id, its hash) and its
  length, with a MAC of its own, rewritten atomically after each commit. It is what detects rows
  deleted from the end, a database emptied or deleted, and a chain recomputed from some row on.
- Rows written before the key existed (the unkeyed sha256 chain of earlier versions) keep their
  scheme; the first keyed row chains onto the last of them, which fixes them from then on.

What it cannot detect: someone who can read the key, or who puts back an older database together
with the anchor of that time (a rollback). Keeping a copy of the anchor elsewhere closes the latter.
"""

from __future__ import annotations

import hashlib
import hmac
import json
import os
import secrets
from dataclasses import dataclass
from pathlib import Path

from llmasos.errors import AuditIntegrityError
from llmasos.storage.files import create_private, write_private

GENESIS = "0" * 64
LEGACY_SCHEME = "sha256"  # before keys: sha256(previous hash + fields), recomputable by anyone
KEYED_SCHEME = "hmac-sha256"

#: The fields the legacy scheme hashed, frozen: new columns must not change old rows' hashes.
LEGACY_FIELDS = (
    "app",
    "call",
    "outcome",
    "target",
    "allowed",
    "reason",
    "pid",
    "tokens_in",
    "tokens_out",
    "duration_s",
    "interface",
    "prompt",
    "output",
    "ts",
)
#: What a keyed row's MAC covers: its position, its fields, and which start row it closes.
KEYED_FIELDS = ("id", *LEGACY_FIELDS, "opens", "scheme")


def _canonical(values: dict, fields: tuple[str, ...]) -> str:
    return json.dumps({k: values[k] for k in fields}, sort_keys=True, separators=(",", ":"))


def legacy_hash(prev_hash: str, values: dict) -> str:
    return hashlib.sha256((prev_hash + _canonical(values, LEGACY_FIELDS)).encode("utf-8")).hexdigest()


def keyed_hash(key: bytes, prev_hash: str, values: dict) -> str:
    message = (prev_hash + _canonical(values, KEYED_FIELDS)).encode("utf-8")
    return hmac.new(key, message, hashlib.sha256).hexdigest()


def row_hash(key: bytes | None, prev_hash: str, values: dict) -> str | None:
    """The hash a row should carry under its own scheme; None when it needs the key and there is none."""
    if values.get("scheme", LEGACY_SCHEME) == LEGACY_SCHEME:
        return legacy_hash(prev_hash, values)
    return keyed_hash(key, prev_hash, values) if key is not None else None


# ---- the key ------------------------------------------------------------------------------------


def read_key(path: Path) -> bytes | None:
    try:
        text = path.read_text().strip()
    except FileNotFoundError:
        return None
    try:
        key = bytes.fromhex(text)
    except ValueError:
        raise AuditIntegrityError(f"{path} does not hold an audit key (64 hex digits); restore it") from None
    if len(key) < 32:
        raise AuditIntegrityError(f"{path} holds a key of {len(key)} bytes; an audit key has 32")
    return key


def create_key(path: Path) -> bytes:
    """A new random key written to `path` (0600), or the one another process wrote first."""
    key = secrets.token_bytes(32)
    try:
        fd = create_private(path, exclusive=True)
    except FileExistsError:
        existing = read_key(path)
        if existing is None:
            raise AuditIntegrityError(f"{path} vanished while it was being created; try again") from None
        return existing
    with os.fdopen(fd, "w") as out:
        out.write(key.hex() + "\n")
        out.flush()
        os.fsync(out.fileno())
    return key


# ---- the anchor ---------------------------------------------------------------------------------


@dataclass(frozen=True)
class Anchor:
    """The chain's head and length as last committed: what the database must still hold."""

    rows: int  # how many rows the chain had
    last_id: int  # the id of its last row (0: none)
    head: str  # that row's hash (GENESIS: none)

    def _message(self) -> bytes:
        return f"llmasos-audit-anchor:{self.rows}:{self.last_id}:{self.head}".encode()

    def mac(self, key: bytes) -> str:
        return hmac.new(key, self._message(), hashlib.sha256).hexdigest()


EMPTY_ANCHOR = Anchor(0, 0, GENESIS)


def write_anchor(path: Path, anchor: Anchor, key: bytes) -> None:
    body = {"rows": anchor.rows, "last_id": anchor.last_id, "head": anchor.head, "mac": anchor.mac(key)}
    # No fsync of the folder: a power cut can then only leave the previous anchor, which is behind
    # the database, and rows past the anchor are accepted when their seals verify. That halves the
    # anchor's cost per row (one fsync, not two).
    write_private(path, json.dumps(body) + "\n", sync_folder=False)


@dataclass(frozen=True)
class AnchorState:
    """What reading the anchor found: `anchor` when present and authentic, else why not."""

    anchor: Anchor | None
    problem: str | None  # None, "missing" or a sentence saying what is wrong with it


def read_anchor(path: Path, key: bytes | None) -> AnchorState:
    try:
        body = json.loads(path.read_text())
        anchor = Anchor(int(body["rows"]), int(body["last_id"]), str(body["head"]))
        mac = str(body["mac"])
    except FileNotFoundError:
        return AnchorState(None, "missing")
    except (ValueError, KeyError, TypeError):
        return AnchorState(None, f"{path.name} is not an anchor (unreadable content)")
    if key is None:
        return AnchorState(anchor, None)  # cannot be authenticated; the caller reports the key
    if not hmac.compare_digest(mac, anchor.mac(key)):
        return AnchorState(None, f"{path.name} was altered: its MAC does not match its content")
    return AnchorState(anchor, None)
