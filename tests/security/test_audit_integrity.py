"""The audit log detects what it claims to: rows altered, rows removed from the end or all of them,
the database or the anchor deleted, and a chain recomputed without the key (issue 20, item 5)."""

from __future__ import annotations

import hashlib
import json
import os
import sqlite3
import stat
from pathlib import Path

import pytest

from llmasos.errors import AuditIntegrityError
from llmasos.security.audit import AuditLog, AuditRecord


def _fill(log: AuditLog, n: int) -> None:
    for i in range(n):
        log.record(AuditRecord(app="app", call="status", outcome="ok", target=str(i)))


def _tamper(path: Path, *statements: str) -> None:
    """Edit the file behind the log's back, as someone with write access to it would."""
    conn = sqlite3.connect(path)
    conn.execute("DROP TRIGGER IF EXISTS audit_no_update")
    conn.execute("DROP TRIGGER IF EXISTS audit_no_delete")
    for sql in statements:
        conn.execute(sql)
    conn.commit()
    conn.close()


@pytest.fixture
def log(llmasos_home: Path) -> AuditLog:
    log = AuditLog()
    _fill(log, 60)
    assert log.verify().intact
    return log


def test_an_untouched_log_verifies_and_its_files_are_private(log, llmasos_home):
    report = log.verify()
    assert report.intact and report.rows == 61  # 60 and the row that starts the keyed chain
    for name in ("audit.db", "audit.key", "audit.anchor"):
        assert stat.S_IMODE(os.stat(llmasos_home / name).st_mode) == 0o600, name
    key = (llmasos_home / "audit.key").read_text().strip()
    assert len(bytes.fromhex(key)) == 32 and key not in (llmasos_home / "audit.anchor").read_text()


def test_an_altered_row_is_named(log):
    _tamper(log.path, "UPDATE audit SET reason = 'nothing to see' WHERE id = 42")
    report = log.verify()
    assert not report.intact
    assert report.problems == ["row 42 altered: its seal does not match its content"]


def test_the_last_500_rows_deleted_is_detected(llmasos_home):
    log = AuditLog()
    _fill(log, 600)
    _tamper(log.path, "DELETE FROM audit WHERE id > 101")
    report = log.verify()
    assert not report.intact
    assert report.problems == [
        "500 rows missing at the end: the anchor records 601 rows up to row 601, the log ends at row 101"
    ]


def test_all_rows_deleted_is_detected(log):
    _tamper(log.path, "DELETE FROM audit")
    (problem,) = log.verify().problems
    assert problem.startswith("61 rows missing at the end") and "the log is empty" in problem


def test_the_database_deleted_is_detected(log):
    log.close()
    for suffix in ("", "-wal", "-shm"):
        Path(str(log.path) + suffix).unlink(missing_ok=True)
    report = AuditLog().verify()
    assert report.problems == [
        "database missing: audit.db is gone, but the anchor records 61 rows up to row 61"
    ]
    assert not log.path.exists()  # verifying created nothing


def test_a_chain_recomputed_without_the_key_is_detected(log):
    """What defeated the old log: recompute every hash with the public formula after an edit."""
    conn = sqlite3.connect(log.path)
    conn.row_factory = sqlite3.Row
    conn.execute("DROP TRIGGER audit_no_update")
    prev = "0" * 64
    for row in conn.execute("SELECT * FROM audit ORDER BY id").fetchall():
        values = dict(row)
        if values["id"] == 30:
            values["app"] = "someone-else"
        digest = hashlib.sha256((prev + json.dumps(values, sort_keys=True)).encode()).hexdigest()
        conn.execute(
            "UPDATE audit SET app = ?, prev_hash = ?, hash = ? WHERE id = ?",
            (values["app"], prev, digest, values["id"]),
        )
        prev = digest
    conn.commit()
    conn.close()
    report = AuditLog().verify()
    assert not report.intact
    assert "row 1 altered: its seal does not match its content" in report.problems
    assert any("not the anchored head" in p for p in report.problems)


def test_rows_removed_then_more_written_stay_detected(log):
    _tamper(log.path, "DELETE FROM audit WHERE id > 50")
    fresh = AuditLog()
    _fill(fresh, 3)  # a server that goes on writing after the truncation
    problems = fresh.verify().problems
    assert problems and problems[0] == "rows 51-61 missing: the chain breaks before row 62"


def test_the_anchor_deleted_is_detected_and_stays_on_record(log):
    log.anchor_path.unlink()
    assert log.verify().problems == [
        "anchor missing: audit.anchor is gone, so rows removed from the end could not be detected"
    ]
    _fill(log, 1)  # writing re-anchors, and leaves a row saying so
    (problem,) = log.verify().problems
    assert "the anchor was missing when this row was written; re-anchored at row 61" in problem


def test_an_anchor_edited_by_hand_is_detected(log):
    body = json.loads(log.anchor_path.read_text())
    log.anchor_path.write_text(json.dumps({**body, "rows": 101, "last_id": 101}))
    assert log.verify().problems == [
        "anchor altered: audit.anchor was altered: its MAC does not match its content"
    ]


def test_without_its_key_the_log_refuses_to_write_and_says_why(log):
    log.key_path.unlink()
    with pytest.raises(AuditIntegrityError, match=r"audit key .* is missing"):
        AuditLog().record(AuditRecord(app="app", call="ps", outcome="ok"))
    (problem,) = AuditLog().verify().problems
    assert problem.startswith("key missing: audit.key is gone")


def test_a_generation_that_never_ended_is_reported_unfinished(llmasos_home):
    log = AuditLog()
    started = log.record(AuditRecord(app="a", call="chat", outcome="started", target="tiny", pid=7))
    ended = log.record(AuditRecord(app="a", call="chat", outcome="started", target="tiny", pid=8))
    log.record(AuditRecord(app="a", call="chat", outcome="finished", pid=8, opens=ended))
    report = log.verify()
    assert report.intact
    assert [(u["id"], u["pid"]) for u in report.unfinished] == [(started, 7)]
    rows = {r["id"]: r for r in log.query()}
    assert rows[started]["unfinished"] and not rows[ended]["unfinished"]


def _legacy_log(path: Path, n: int) -> None:
    """An audit.db as the unkeyed version wrote it: sha256(prev + fields), no key, no anchor."""
    from llmasos.security.audit import _create_audit_table
    from llmasos.security.audit_seal import GENESIS, legacy_hash

    path.parent.mkdir(parents=True, exist_ok=True)
    conn = sqlite3.connect(path)
    _create_audit_table(conn)
    conn.execute("PRAGMA user_version=1")
    prev = GENESIS
    for i in range(n):
        values = {
            "ts": 1000.0 + i, "app": "old", "call": "ps", "target": "", "allowed": 1, "outcome": "ok",
            "reason": "", "pid": None, "tokens_in": 0, "tokens_out": 0, "duration_s": 0.0,
            "interface": "cli", "prompt": None, "output": None,
        }  # fmt: skip
        digest = legacy_hash(prev, values)
        columns = (*values, "prev_hash", "hash")
        conn.execute(
            f"INSERT INTO audit ({', '.join(columns)}) VALUES ({', '.join('?' * len(columns))})",
            (*values.values(), prev, digest),
        )
        prev = digest
    conn.commit()
    conn.close()


def test_an_old_unkeyed_log_is_verified_up_to_the_migration_and_sealed_from_there(llmasos_home):
    path = llmasos_home / "audit.db"
    _legacy_log(path, 20)
    report = AuditLog().verify()
    assert report.intact and report.rows == 20 and "old unkeyed scheme" in report.notes[0]
    log = AuditLog()
    log.record(AuditRecord(app="new", call="ps", outcome="ok"))
    marker = log.query(app="system")[0]
    assert marker["call"] == "audit.keyed" and "20 rows before" in marker["reason"]
    assert "they verified" in marker["reason"]
    assert log.verify().intact
    # An old row changed later breaks the link the first keyed row sealed.
    _tamper(path, "UPDATE audit SET app = 'forged' WHERE id = 5")
    assert "row 5 altered: its seal does not match its content" in AuditLog().verify().problems
