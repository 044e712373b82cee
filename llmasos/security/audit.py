"""The audit trail: one append-only, hash-chained row per system call.

Who called, what, on which model/service/tool, whether it was allowed and why not, the tokens it
used and how it ended. Prompts and outputs are stored only for apps that opt in
(`App.audit_content`). Rows live in `$LLMASOS_HOME/audit.db`; SQLite triggers refuse UPDATE and
DELETE, and each row carries sha256(previous row's hash + its own fields), so `verify()` finds any
row changed or removed behind SQLite's back (with the file edited directly).
"""

from __future__ import annotations

import hashlib
import json
import time
from dataclasses import asdict, dataclass, field
from pathlib import Path

from llmasos.config import llmasos_home
from llmasos.storage.db import Database

GENESIS = "0" * 64
OUTCOMES = ("ok", "denied", "finished", "cancelled", "failed", "error")


@dataclass(frozen=True)
class AuditRecord:
    app: str  # the calling app ("anonymous" when the server allows unauthenticated calls)
    call: str  # generate, chat, cancel, status, ps, apps.create, service.summarize, tool.ocr, ...
    outcome: str  # one of OUTCOMES
    target: str = ""  # the model, service, tool, app or process the call was about
    allowed: bool = True
    reason: str = ""  # why it was denied or failed; empty when it went well
    pid: int | None = None
    tokens_in: int = 0
    tokens_out: int = 0
    duration_s: float = 0.0
    interface: str = ""  # http, sdk, cli
    prompt: str | None = None  # only when the app opted in to content auditing
    output: str | None = None
    ts: float = field(default_factory=time.time)


def _create_audit_table(conn) -> None:
    conn.execute(
        """CREATE TABLE audit (
            id INTEGER PRIMARY KEY AUTOINCREMENT,
            ts REAL NOT NULL, app TEXT NOT NULL, call TEXT NOT NULL, target TEXT NOT NULL,
            allowed INTEGER NOT NULL, outcome TEXT NOT NULL, reason TEXT NOT NULL,
            pid INTEGER, tokens_in INTEGER NOT NULL, tokens_out INTEGER NOT NULL,
            duration_s REAL NOT NULL, interface TEXT NOT NULL, prompt TEXT, output TEXT,
            prev_hash TEXT NOT NULL, hash TEXT NOT NULL
        )"""
    )
    conn.execute("CREATE INDEX audit_app ON audit (app, id)")
    conn.execute("CREATE INDEX audit_outcome ON audit (outcome, id)")
    for op in ("UPDATE", "DELETE"):
        conn.execute(
            f"""CREATE TRIGGER audit_no_{op.lower()} BEFORE {op} ON audit
                BEGIN SELECT RAISE(ABORT, 'the audit log is append-only'); END"""
        )


MIGRATIONS = [_create_audit_table]
_FIELDS = tuple(AuditRecord.__dataclass_fields__)


def _row_hash(prev_hash: str, values: dict) -> str:
    canonical = json.dumps({k: values[k] for k in _FIELDS}, sort_keys=True, separators=(",", ":"))
    return hashlib.sha256((prev_hash + canonical).encode("utf-8")).hexdigest()


class AuditLog:
    """Append and read audit rows."""

    def __init__(self, path: Path | None = None) -> None:
        self.db = Database(path or llmasos_home() / "audit.db", MIGRATIONS)

    def record(self, record: AuditRecord) -> int:
        """Append one row; returns its id."""
        values = asdict(record)
        values["allowed"] = int(values["allowed"])
        values["ts"] = round(values["ts"], 6)
        values["duration_s"] = round(values["duration_s"], 6)
        with self.db.transaction() as conn:
            last = conn.execute("SELECT hash FROM audit ORDER BY id DESC LIMIT 1").fetchone()
            prev = last[0] if last else GENESIS
            columns = (*_FIELDS, "prev_hash", "hash")
            cursor = conn.execute(
                f"INSERT INTO audit ({', '.join(columns)}) VALUES ({', '.join('?' * len(columns))})",
                (*(values[k] for k in _FIELDS), prev, _row_hash(prev, values)),
            )
            return int(cursor.lastrowid)

    def query(
        self,
        *,
        app: str | None = None,
        outcome: str | None = None,
        allowed: bool | None = None,
        since: float | None = None,
        limit: int = 100,
    ) -> list[dict]:
        """Rows, newest first, filtered by app, outcome, allowed and time."""
        where, params = [], []
        for column, value in (("app", app), ("outcome", outcome)):
            if value is not None:
                where.append(f"{column} = ?")
                params.append(value)
        if allowed is not None:
            where.append("allowed = ?")
            params.append(int(allowed))
        if since is not None:
            where.append("ts >= ?")
            params.append(since)
        sql = "SELECT * FROM audit" + (f" WHERE {' AND '.join(where)}" if where else "")
        rows = self.db.execute(sql + " ORDER BY id DESC LIMIT ?", (*params, max(1, int(limit))))
        return [{**dict(r), "allowed": bool(r["allowed"])} for r in rows]

    def verify(self) -> int | None:
        """The id of the first row whose chain is broken, or None when every row is intact."""
        prev = GENESIS
        for row in self.db.execute("SELECT * FROM audit ORDER BY id"):
            values = dict(row)
            if row["prev_hash"] != prev or _row_hash(prev, values) != row["hash"]:
                return int(row["id"])
            prev = row["hash"]
        return None
