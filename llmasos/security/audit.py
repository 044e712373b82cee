"""The audit trail: one append-only, authenticated row per system call, two per generation.

Who called, what, on which model/service/tool, whether it was allowed and why not, the tokens it
used and how it ended. A generation (`generate`, `chat`) writes a row when it starts (outcome
`started`) and one when it ends, whose `opens` names the start row; a start row that nothing closes
is a generation that never ended (the server was killed, or it still runs). Prompts and outputs are
stored only for apps that opt in (`App.audit_content`).

Rows live in `$LLMASOS_HOME/audit.db`; SQLite triggers refuse UPDATE and DELETE, and each row is
sealed with a key kept outside the database, with the chain's head anchored outside it too
(`audit_seal.py` says how), so `verify()` detects rows altered, removed from anywhere, a database
emptied or deleted, and a chain recomputed.
"""

from __future__ import annotations

import contextlib
import fcntl
import os
import sqlite3
import threading
import time
from collections.abc import Callable, Iterator, Sequence
from dataclasses import asdict, dataclass, field
from pathlib import Path

from llmasos.config import llmasos_home
from llmasos.errors import AuditIntegrityError
from llmasos.security.audit_seal import (
    EMPTY_ANCHOR,
    GENESIS,
    KEYED_SCHEME,
    LEGACY_SCHEME,
    Anchor,
    create_key,
    keyed_hash,
    read_anchor,
    read_key,
    row_hash,
    write_anchor,
)
from llmasos.security.audit_verify import ANCHOR_LOST, AuditReport, first_legacy_break, verify_log
from llmasos.security.audit_writer import AuditWriter, QueuedRow
from llmasos.security.data_keys import AUDIT_PURPOSE, open_text_or_note
from llmasos.storage.db import Database
from llmasos.storage.files import create_private

OUTCOMES = ("ok", "denied", "started", "finished", "cancelled", "failed", "error")
#: Rows the log writes about itself; `verify` reports the ones that mean something went wrong.
KEYED_FROM_HERE = "audit.keyed"


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
    opens: int | None = None  # on the row that ends a generation: the id of the row that started it


def _create_audit_table(conn: sqlite3.Connection) -> None:
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


def _add_sealing_columns(conn: sqlite3.Connection) -> None:
    """Rows already there keep the unkeyed sha256 scheme they were written with; they are verified
    under it, and the first keyed row (`audit.keyed`) chains onto the last of them."""
    conn.execute(f"ALTER TABLE audit ADD COLUMN scheme TEXT NOT NULL DEFAULT '{LEGACY_SCHEME}'")
    conn.execute("ALTER TABLE audit ADD COLUMN opens INTEGER")
    conn.execute("CREATE INDEX audit_opens ON audit (opens)")


MIGRATIONS = [_create_audit_table, _add_sealing_columns]
_FIELDS = tuple(AuditRecord.__dataclass_fields__)


def _values(record: AuditRecord) -> dict:
    values = asdict(record)
    values["allowed"] = int(values["allowed"])
    values["ts"] = round(values["ts"], 6)
    values["duration_s"] = round(values["duration_s"], 6)
    return values


class AuditLog:
    """Append, read and verify audit rows. The files beside `path`: `audit.key` (the sealing key),
    `audit.anchor` (the chain's head and length) and `audit.lock` (one writer at a time, across
    processes, so anchors are written in the order of the rows they record)."""

    def __init__(self, path: Path | None = None) -> None:
        self.path = Path(path or llmasos_home() / "audit.db")
        self.key_path = self.path.with_suffix(".key")
        self.anchor_path = self.path.with_suffix(".anchor")
        self.lock_path = self.path.with_suffix(".lock")
        self._mutex = threading.Lock()
        self._queued = 0  # threads of this process waiting to write (read and changed under _counting)
        self._counting = threading.Lock()
        self._written: Anchor | None = None  # the head this log wrote last (past a skipped anchor)
        self._database: Database | None = None
        self._key: bytes | None = None
        self._lock_fd: int | None = None
        self._writer = AuditWriter(lambda rows: self.record_many(rows))

    @property
    def db(self) -> Database:
        """The database, opened on first use (so that `verify` can still see a missing file)."""
        if self._database is None:
            self._database = Database(self.path, MIGRATIONS)
        return self._database

    # ---- writing ------------------------------------------------------------------------------

    def record(self, record: AuditRecord) -> int:
        """Append one row now, in the caller's thread, sealed and anchored; returns its id."""
        return self.record_many([QueuedRow(record)])[0]

    def submit(self, record: AuditRecord, opens: QueuedRow | None = None) -> QueuedRow:
        """Queue one row for the writer thread (see audit_writer.py); `opens`: the queued start row
        this one ends. `QueuedRow.wait()` waits for it and gives its id."""
        return self._writer.submit(QueuedRow(record, opens))

    def start_writer(self) -> None:
        """Start the writer's thread now, at the caller's priority (see `AuditWriter.start`)."""
        self._writer.start()

    def after_written(self, callback: Callable[[], None]) -> None:
        """Run `callback` once every row submitted so far is durable (in the writer's thread)."""
        self._writer.after_written(callback)

    def flush(self, timeout: float | None = None) -> bool:
        """Wait until every row submitted so far is written; False if `timeout` passed first."""
        return self._writer.flush(timeout)

    def record_many(self, rows: Sequence[QueuedRow]) -> list[int]:
        """Append `rows` in order in one transaction, sealed, and anchor the last; their ids (also
        set on each row once committed). A row that ends a queued start row names its id.

        The anchor is rewritten after every batch unless another thread of this process is already
        waiting to write: that one's anchor then covers these rows too, so a burst of writers costs
        one anchor fsync, and at rest the anchor always names the last row."""
        with self._counting:
            self._queued += 1
        with self._mutex, self._one_writer():
            with self._counting:
                self._queued -= 1
            key, fresh = self._sealing_key()
            lost = None
            with self.db.transaction() as conn:
                if fresh:
                    head = self._append(conn, key, _db_head(conn), _keyed_from_here(conn))
                else:
                    head, lost = self._head(conn, key)
                    if lost is not None:
                        head = self._append(conn, key, head, _system_row(ANCHOR_LOST, lost))
                ids = []
                for row in rows:
                    head = self._append(conn, key, head, _values(row.resolved()))
                    ids.append(head.last_id)
                    row.row_id = head.last_id  # read by the rows after it in this batch
            # After the commit: a crash in between leaves authentic rows past the anchor, which the
            # next writer and `verify` accept, never an anchor ahead of the database.
            self._written = head
            with self._counting:
                followed = self._queued > 0
            if fresh or lost is not None or not followed:  # the next writer needs an anchor to find
                write_anchor(self.anchor_path, head, key)
        return ids

    def _sealing_key(self) -> tuple[bytes, bool]:
        """The key, and whether it was made just now (the log becomes keyed from this row on)."""
        if self._key is not None:
            return self._key, False
        key = read_key(self.key_path)
        fresh = key is None
        if key is None:
            sealed = self.db.execute("SELECT COUNT(*) AS n FROM audit WHERE scheme != ?", (LEGACY_SCHEME,))
            if sealed[0]["n"]:
                raise AuditIntegrityError(
                    f"the audit key {self.key_path} is missing, but {self.path.name} holds "
                    f"{sealed[0]['n']} rows sealed with it: restore the key from a backup, or move "
                    f"{self.path.name} and {self.anchor_path.name} aside to start a new log"
                )
            key = create_key(self.key_path)
        self._key = key
        return key, fresh

    def _head(self, conn: sqlite3.Connection, key: bytes) -> tuple[Anchor, str | None]:
        """Where the next row chains on, and why the anchor had to be replaced (None if it was fine).

        The anchored head wins over the database's last row: rows removed or replaced behind the
        anchor then leave a visible break, rather than a chain quietly continued from what remains."""
        state = read_anchor(self.anchor_path, key)
        if state.anchor is None:
            head = _db_head(conn)
            why = "was missing" if state.problem == "missing" else f"was not valid ({state.problem})"
            return head, f"the anchor {why} when this row was written; re-anchored at row {head.last_id}"
        head = state.anchor
        anchored = conn.execute("SELECT hash FROM audit WHERE id = ?", (head.last_id,)).fetchone()
        if head.last_id and (anchored is None or anchored[0] != head.head):
            return head, None
        mine = self._written
        if mine is not None and mine.last_id > head.last_id:  # its own rows need no second check
            row = conn.execute("SELECT hash FROM audit WHERE id = ?", (mine.last_id,)).fetchone()
            if row is not None and row[0] == mine.head:
                head = mine
        # Rows past the anchor: written by a writer that died before its anchor; kept if authentic.
        for row in conn.execute("SELECT * FROM audit WHERE id > ? ORDER BY id", (head.last_id,)):
            if row["prev_hash"] != head.head or row_hash(key, head.head, dict(row)) != row["hash"]:
                break
            head = Anchor(head.rows + 1, row["id"], row["hash"])
        return head, None

    def _append(self, conn: sqlite3.Connection, key: bytes, head: Anchor, values: dict) -> Anchor:
        # The id is part of what the MAC covers, so it is chosen here, past every id ever anchored.
        taken = conn.execute(
            "SELECT MAX(n) FROM (SELECT MAX(id) AS n FROM audit "
            "UNION ALL SELECT seq FROM sqlite_sequence WHERE name = 'audit')"
        ).fetchone()[0]
        values = {**values, "id": max(taken or 0, head.last_id) + 1, "scheme": KEYED_SCHEME}
        digest = keyed_hash(key, head.head, values)
        columns = (*values, "prev_hash", "hash")
        conn.execute(
            f"INSERT INTO audit ({', '.join(columns)}) VALUES ({', '.join('?' * len(columns))})",
            (*values.values(), head.head, digest),
        )
        return Anchor(head.rows + 1, values["id"], digest)

    @contextlib.contextmanager
    def _one_writer(self) -> Iterator[None]:
        if self._lock_fd is None:
            self._lock_fd = create_private(self.lock_path)
        fcntl.flock(self._lock_fd, fcntl.LOCK_EX)
        try:
            yield
        finally:
            fcntl.flock(self._lock_fd, fcntl.LOCK_UN)

    # ---- reading ------------------------------------------------------------------------------

    def query(
        self,
        *,
        app: str | None = None,
        outcome: str | None = None,
        allowed: bool | None = None,
        since: float | None = None,
        limit: int = 100,
    ) -> list[dict]:
        """Rows, newest first, filtered by app, outcome, allowed and time. A start row carries
        `unfinished`: True while no row has ended its generation."""
        self.flush()  # rows this process queued are read too
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
        sql = (
            "SELECT a.*, (a.outcome = 'started' AND NOT EXISTS "
            "(SELECT 1 FROM audit e WHERE e.opens = a.id)) AS unfinished FROM audit a"
        )
        sql += f" WHERE {' AND '.join(where)}" if where else ""
        rows = self.db.execute(sql + " ORDER BY id DESC LIMIT ?", (*params, max(1, int(limit))))
        return [_readable(r) for r in rows]

    def verify(self) -> AuditReport:
        """Check every row's seal, the chain, and the anchor; the report says exactly what is wrong."""
        self.flush()
        return verify_log(self.path, self.key_path, self.anchor_path)

    def close(self) -> None:
        """Write what is queued, stop the writer thread, close the files (a row written later, in
        its caller's thread, opens them again)."""
        self._writer.close()
        if self._database is not None:
            self._database.close()
            self._database = None
        if self._lock_fd is not None:
            os.close(self._lock_fd)
            self._lock_fd = None


def _readable(row: sqlite3.Row) -> dict:
    """A row as callers see it: content sealed under its app's data key opened (or noted as shredded)."""
    return {
        **dict(row),
        "allowed": bool(row["allowed"]),
        "unfinished": bool(row["unfinished"]),
        "prompt": open_text_or_note(row["prompt"], AUDIT_PURPOSE),
        "output": open_text_or_note(row["output"], AUDIT_PURPOSE),
    }


def _db_head(conn: sqlite3.Connection) -> Anchor:
    last = conn.execute("SELECT id, hash FROM audit ORDER BY id DESC LIMIT 1").fetchone()
    if last is None:
        return EMPTY_ANCHOR
    count = conn.execute("SELECT COUNT(*) FROM audit").fetchone()[0]
    return Anchor(count, last[0], last[1])


def _system_row(call: str, reason: str) -> dict:
    outcome = "error" if call == ANCHOR_LOST else "ok"
    return _values(AuditRecord(app="system", call=call, outcome=outcome, reason=reason))


def _keyed_from_here(conn: sqlite3.Connection) -> dict:
    """The migration point: rows before it were written under the unkeyed scheme."""
    rows = [dict(r) for r in conn.execute("SELECT * FROM audit ORDER BY id")]
    if not rows:
        return _system_row(KEYED_FROM_HERE, "the audit log is keyed from its first row")
    broken = first_legacy_break(rows)
    state = f"the old chain was already broken at row {broken}" if broken else "they verified"
    return _system_row(
        KEYED_FROM_HERE,
        f"the audit log is keyed from here; the {len(rows)} rows before were checked under the old "
        f"unkeyed sha256 scheme: {state}",
    )


__all__ = ["GENESIS", "OUTCOMES", "AuditLog", "AuditRecord", "AuditReport", "QueuedRow"]
