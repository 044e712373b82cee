"""Verifying the audit log from its files: every row's seal, the chain between rows, and the anchor.

Reads the files as they are (a missing database stays missing: nothing is created), and says exactly
what is wrong: which row was altered, how many rows are missing and where, whether the database,
the anchor or the key is gone. Generations that started and never ended are listed apart: they are
not tampering (a killed server leaves them), but an auditor wants to see them.
"""

from __future__ import annotations

import sqlite3
from dataclasses import dataclass, field
from pathlib import Path

from llmasos.errors import AuditIntegrityError
from llmasos.security.audit_seal import (
    GENESIS,
    LEGACY_SCHEME,
    Anchor,
    legacy_hash,
    read_anchor,
    read_key,
    row_hash,
)

#: Past this many altered rows, the report counts the rest instead of naming each.
MAX_NAMED_PROBLEMS = 20
ANCHOR_LOST = "audit.anchor_lost"


@dataclass
class AuditReport:
    """What `verify` found. The log is intact when there are no problems."""

    rows: int = 0
    problems: list[str] = field(default_factory=list)  # each a sentence: what is wrong, and where
    notes: list[str] = field(default_factory=list)  # facts worth knowing that are not tampering
    unfinished: list[dict] = field(default_factory=list)  # start rows that nothing ended

    @property
    def intact(self) -> bool:
        return not self.problems

    def to_dict(self) -> dict:
        return {
            "intact": self.intact,
            "rows": self.rows,
            "problems": self.problems,
            "notes": self.notes,
            "unfinished": self.unfinished,
        }


def first_legacy_break(rows: list[dict]) -> int | None:
    """The id of the first row of an unkeyed chain that does not verify, or None."""
    prev = GENESIS
    for row in rows:
        if row["prev_hash"] != prev or legacy_hash(prev, row) != row["hash"]:
            return int(row["id"])
        prev = row["hash"]
    return None


def verify_log(db_path: Path, key_path: Path, anchor_path: Path) -> AuditReport:
    report = AuditReport()
    try:
        key = read_key(key_path)
    except AuditIntegrityError as err:
        report.problems.append(f"key unreadable: {err}")
        key = None
    anchor_state = read_anchor(anchor_path, key)
    if not db_path.exists():
        _report_missing_database(report, db_path, anchor_state.anchor, key is not None)
        return report
    rows = _read_rows(db_path)
    report.rows = len(rows)
    sealed = any(r["scheme"] != LEGACY_SCHEME for r in rows)
    if sealed and key is None and not report.problems:
        report.problems.append(
            f"key missing: {key_path.name} is gone, so the {report.rows} sealed rows cannot be checked; "
            "restore it from a backup"
        )
    _check_chain(report, rows, key)
    _check_anchor(report, rows, anchor_state, key, anchor_path.name)
    ended = {r["opens"] for r in rows if r["opens"] is not None}
    report.unfinished = [
        {k: r[k] for k in ("id", "ts", "app", "call", "target", "pid", "interface")}
        for r in rows
        if r["outcome"] == "started" and r["id"] not in ended
    ]
    return report


def _report_missing_database(report: AuditReport, db_path: Path, anchor: Anchor | None, keyed: bool) -> None:
    if anchor is not None:
        report.problems.append(
            f"database missing: {db_path.name} is gone, but the anchor records {anchor.rows} rows "
            f"up to row {anchor.last_id}"
        )
    elif keyed:
        report.problems.append(
            f"database and anchor missing: {db_path.name} and its anchor are gone, but the audit key "
            "shows that a log was kept here"
        )
    else:
        report.notes.append("no audit log yet: nothing has been recorded here")


def _read_rows(db_path: Path) -> list[dict]:
    conn = sqlite3.connect(db_path)
    try:
        conn.row_factory = sqlite3.Row
        columns = {r[1] for r in conn.execute("PRAGMA table_info(audit)")}
        if not columns:
            return []
        rows = [dict(r) for r in conn.execute("SELECT * FROM audit ORDER BY id")]
    finally:
        conn.close()
    for row in rows:  # a file from before sealing has neither column
        row.setdefault("scheme", LEGACY_SCHEME)
        row.setdefault("opens", None)
    return rows


def _check_chain(report: AuditReport, rows: list[dict], key: bytes | None) -> None:
    prev, prev_id, seen_sealed, altered = GENESIS, 0, False, 0
    for row in rows:
        row_id = int(row["id"])
        if row["prev_hash"] != prev:
            if row_id > prev_id + 1:
                report.problems.append(
                    f"rows {prev_id + 1}-{row_id - 1} missing: the chain breaks before row {row_id}"
                )
            else:
                report.problems.append(
                    f"the chain breaks at row {row_id}: the row it follows is not the one it was sealed after"
                )
        if row["scheme"] == LEGACY_SCHEME and seen_sealed:
            report.problems.append(f"row {row_id} claims the old unkeyed scheme after sealed rows: forged")
        seen_sealed = seen_sealed or row["scheme"] != LEGACY_SCHEME
        expected = row_hash(key, row["prev_hash"], row)
        if expected is not None and expected != row["hash"]:
            altered += 1
            if altered <= MAX_NAMED_PROBLEMS:
                report.problems.append(f"row {row_id} altered: its seal does not match its content")
        if row["call"] == ANCHOR_LOST:
            report.problems.append(f"row {row_id}: {row['reason']}")
        prev, prev_id = row["hash"], row_id
    if altered > MAX_NAMED_PROBLEMS:
        report.problems.append(f"and {altered - MAX_NAMED_PROBLEMS} more rows altered")


def _check_anchor(report: AuditReport, rows: list[dict], state, key: bytes | None, name: str) -> None:
    sealed = key is not None or any(r["scheme"] != LEGACY_SCHEME for r in rows)
    if state.anchor is None:
        if state.problem != "missing":
            report.problems.append(f"anchor altered: {state.problem}")
        elif sealed:
            report.problems.append(
                f"anchor missing: {name} is gone, so rows removed from the end could not be detected"
            )
        elif rows:
            report.notes.append(
                f"the {len(rows)} rows use the old unkeyed scheme and no anchor yet; "
                "the next recorded call seals the log from there"
            )
        return
    anchor = state.anchor
    by_id = {int(r["id"]): r for r in rows}
    last_id = int(rows[-1]["id"]) if rows else 0
    if anchor.last_id and anchor.last_id not in by_id:
        held = sum(1 for i in by_id if i <= anchor.last_id)
        if last_id < anchor.last_id:
            ends = f"row {last_id}" if rows else "nothing: the log is empty"
            report.problems.append(
                f"{anchor.rows - held} rows missing at the end: the anchor records {anchor.rows} rows "
                f"up to row {anchor.last_id}, the log ends at {ends}"
            )
        else:
            report.problems.append(f"row {anchor.last_id}, the anchored head of the chain, is missing")
        return
    if anchor.last_id and by_id[anchor.last_id]["hash"] != anchor.head:
        report.problems.append(
            f"row {anchor.last_id} is not the anchored head: the chain was recomputed or replaced"
        )
    held = sum(1 for i in by_id if i <= anchor.last_id)
    if held != anchor.rows:
        report.problems.append(
            f"{anchor.rows - held} rows missing: the anchor records {anchor.rows} rows up to row "
            f"{anchor.last_id}, the log holds {held}"
        )
    past = sum(1 for i in by_id if i > anchor.last_id)
    if past:
        report.notes.append(f"{past} rows after the anchor (written as a writer stopped); their seals verify")
