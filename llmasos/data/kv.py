"""An app's key-value store: JSON values under string keys, each with an optional time to live.

Expired keys read as absent at once and are deleted on the next write of the app's store.
"""

from __future__ import annotations

import json
import sqlite3
import time
from typing import Any

from llmasos.data.app_data import AppData
from llmasos.data.quota import require_room
from llmasos.errors import DataNotFoundError, InvalidRequestError

MAX_KEY_CHARS = 512
MAX_VALUE_BYTES = 1 << 20  # 1 MiB a value: a key-value store, not a file store (use /v1/files)
MAX_LIST = 1000


def _check_key(key: Any) -> str:
    if not isinstance(key, str) or not 0 < len(key) <= MAX_KEY_CHARS or any(ord(c) < 32 for c in key):
        raise InvalidRequestError(f"a key is a string of 1 to {MAX_KEY_CHARS} printable characters")
    return key


def _live(now: float) -> tuple[str, tuple]:
    return "(expires_at IS NULL OR expires_at > ?)", (now,)


def kv_set(
    data: AppData, key: str, value: Any, ttl_s: float | None = None, *, idempotency_key: str = ""
) -> dict:
    """Store `value` under `key`. With `idempotency_key`, a second call of the same key writes
    nothing and answers what the first did (a workflow step re-run after a crash)."""
    _check_key(key)
    if ttl_s is not None and (isinstance(ttl_s, bool) or not isinstance(ttl_s, int | float) or ttl_s <= 0):
        raise InvalidRequestError("ttl_s must be a number of seconds > 0 (or absent: never expires)")
    try:
        encoded = json.dumps(value, ensure_ascii=False, allow_nan=False)
    except (TypeError, ValueError) as err:
        raise InvalidRequestError(
            f"the value is not JSON ({err}); store strings, numbers, lists or objects"
        ) from None
    if len(encoded.encode()) > MAX_VALUE_BYTES:
        raise InvalidRequestError(
            f"the value is over {MAX_VALUE_BYTES:,} bytes as JSON; store big data as a file"
        )
    now = time.time()
    expires_at = now + ttl_s if ttl_s is not None else None
    sealed = data.seal_text(encoded, f"kv:{key}")
    with data.db.transaction() as conn:
        done = _applied(data, conn, idempotency_key)
        if done is not None:
            return done
        conn.execute("DELETE FROM kv WHERE expires_at IS NOT NULL AND expires_at <= ?", (now,))
        old = conn.execute("SELECT length(key) + length(value) FROM kv WHERE key = ?", (key,)).fetchone()
        grow = len(key) + len(sealed) - (old[0] if old else 0)
        require_room(conn, max(0, grow), 0 if old else 1, f"setting key {key[:40]!r}")
        conn.execute(
            "INSERT INTO kv (key, value, expires_at, updated_at) VALUES (?, ?, ?, ?) ON "
            "CONFLICT(key) DO UPDATE "
            "SET value = excluded.value, expires_at = excluded.expires_at, updated_at = excluded.updated_at",
            (key, sealed, expires_at, now),
        )
        return _apply(data, conn, idempotency_key, {"key": key, "value": value, "expires_at": expires_at})


def kv_get(data: AppData, key: str) -> dict:
    _check_key(key)
    live, params = _live(time.time())
    rows = data.db.execute(f"SELECT value, expires_at FROM kv WHERE key = ? AND {live}", (key, *params))
    if not rows:
        raise DataNotFoundError(f"no key {key[:80]!r} (never set, deleted or expired)")
    value = json.loads(data.open_text(rows[0]["value"], f"kv:{key}"))
    return {"key": key, "value": value, "expires_at": rows[0]["expires_at"]}


def kv_delete(data: AppData, key: str, *, idempotency_key: str = "") -> dict:
    """Delete `key`; DataNotFoundError if it is not there. With `idempotency_key`, a second call of
    the same key answers what the first did (not "no key": the first call deleted it)."""
    _check_key(key)
    live, params = _live(time.time())
    with data.db.transaction() as conn:
        done = _applied(data, conn, idempotency_key)
        if done is not None:
            return done
        if conn.execute(f"DELETE FROM kv WHERE key = ? AND {live}", (key, *params)).rowcount == 0:
            raise DataNotFoundError(f"no key {key[:80]!r} (never set, deleted or expired)")
        return _apply(data, conn, idempotency_key, {"key": key, "deleted": True})


def _applied(data: AppData, conn: sqlite3.Connection, idempotency_key: str) -> dict | None:
    """What the write of `idempotency_key` answered, if it was made before (inside its transaction)."""
    if not idempotency_key:
        return None
    row = conn.execute("SELECT answer FROM kv_applied_keys WHERE key = ?", (idempotency_key,)).fetchone()
    return None if row is None else json.loads(data.open_text(row[0], _applied_purpose(idempotency_key)))


def _apply(data: AppData, conn: sqlite3.Connection, idempotency_key: str, answer: dict) -> dict:
    """Record the write of `idempotency_key` in the same transaction as the write itself. The answer
    holds the value written: it is sealed as the value is."""
    if idempotency_key:
        encoded = json.dumps(answer, ensure_ascii=False)
        conn.execute(
            "INSERT INTO kv_applied_keys (key, answer, created_at) VALUES (?, ?, ?)",
            (idempotency_key, data.seal_text(encoded, _applied_purpose(idempotency_key)), time.time()),
        )
    return answer


def _applied_purpose(idempotency_key: str) -> str:
    return f"kv-applied:{idempotency_key}"


def kv_list(data: AppData, prefix: str = "", limit: int = 100, after: str | None = None) -> dict:
    if not isinstance(limit, int) or not 1 <= limit <= MAX_LIST:
        raise InvalidRequestError(f"limit must be an integer from 1 to {MAX_LIST}")
    live, params = _live(time.time())
    # Prefix match by range, not LIKE: a key may hold % or _.
    rows = data.db.execute(
        f"SELECT key, expires_at FROM kv WHERE key >= ? AND key > ? AND substr(key, 1, ?) = ? AND {live} "
        "ORDER BY key LIMIT ?",
        (prefix, after or "", len(prefix), prefix, *params, limit + 1),
    )
    keys = [{"key": r["key"], "expires_at": r["expires_at"]} for r in rows[:limit]]
    return {"object": "list", "data": keys, "has_more": len(rows) > limit}
