"""Runs and step results in SQLite (WAL) under $LLMASOS_HOME, so a run outlives any crash of the server.

A step's result is one committed row (`step_results`), written before anything that needs it may
start; a result is never written twice (the primary key refuses it). Each attempt is a row of
`attempts` when it starts, closed when it ends: an attempt a crash interrupted stays open, and its
re-run reuses its number, so its idempotency key (run, step, item, attempt) is the same and the
tools that write do so once. Outputs over `BLOB_BYTES` are files of their own (0600) named by their
digest, so a run record never grows past a few kilobytes a step, whatever its steps return.
"""

from __future__ import annotations

import contextlib
import hashlib
import json
import sqlite3
import time
import uuid
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from llmasos.config import llmasos_home
from llmasos.errors import WorkflowNotFoundError
from llmasos.security.apps import App
from llmasos.security.data_keys import data_keys
from llmasos.storage.db import Database
from llmasos.storage.files import private_dir, write_private
from llmasos.workflows.changes import StoreChanges
from llmasos.workflows.spec import Workflow, dumps, parse

#: Outputs larger than this (as JSON) are stored apart from the run record.
BLOB_BYTES = 64 * 1024
#: A step result for the step as a whole (not one item of a for_each).
WHOLE = -1
UNFINISHED = ("pending", "running", "waiting")
FINISHED = ("succeeded", "failed", "cancelled")


def _create_tables(conn: sqlite3.Connection) -> None:
    conn.execute(
        """CREATE TABLE definitions (
            app_id TEXT NOT NULL, name TEXT NOT NULL, spec TEXT NOT NULL, created_at REAL NOT NULL,
            PRIMARY KEY (app_id, name))"""
    )
    conn.execute(
        """CREATE TABLE runs (
            id TEXT PRIMARY KEY, app TEXT NOT NULL, app_id TEXT NOT NULL, workflow TEXT NOT NULL,
            spec TEXT NOT NULL, inputs TEXT NOT NULL, status TEXT NOT NULL, error TEXT,
            output TEXT, parent TEXT, depth INTEGER NOT NULL DEFAULT 0,
            created_at REAL NOT NULL, updated_at REAL NOT NULL, finished_at REAL)"""
    )
    conn.execute("CREATE INDEX runs_by_status ON runs (status)")
    conn.execute("CREATE INDEX runs_by_app ON runs (app_id, created_at)")
    conn.execute(
        """CREATE TABLE step_results (
            run_id TEXT NOT NULL REFERENCES runs(id) ON DELETE CASCADE, step TEXT NOT NULL,
            item INTEGER NOT NULL, status TEXT NOT NULL, output TEXT, blob TEXT, error TEXT,
            attempts INTEGER NOT NULL, started_at REAL, finished_at REAL NOT NULL,
            PRIMARY KEY (run_id, step, item))"""
    )
    conn.execute(
        """CREATE TABLE attempts (
            run_id TEXT NOT NULL REFERENCES runs(id) ON DELETE CASCADE, step TEXT NOT NULL,
            item INTEGER NOT NULL, attempt INTEGER NOT NULL, started_at REAL NOT NULL,
            ended_at REAL, error TEXT)"""
    )
    conn.execute("CREATE INDEX attempts_by_step ON attempts (run_id, step, item)")
    conn.execute(
        """CREATE TABLE events (
            id INTEGER PRIMARY KEY AUTOINCREMENT, run_id TEXT NOT NULL, at REAL NOT NULL,
            type TEXT NOT NULL, step TEXT, item INTEGER, data TEXT)"""
    )
    conn.execute("CREATE INDEX events_by_run ON events (run_id, id)")


MIGRATIONS = [_create_tables]


WORKFLOW_PURPOSE = "workflow"


@dataclass(frozen=True)
class StepRecord:
    """One committed result: a step's (item = WHOLE) or one item's of a for_each."""

    step: str
    item: int
    status: str  # succeeded, failed, skipped, waiting
    output: Any
    error: str | None
    attempts: int
    started_at: float | None
    finished_at: float

    def to_dict(self) -> dict:
        return {
            "step": self.step,
            "item": None if self.item == WHOLE else self.item,
            "status": self.status,
            "output": self.output,
            "error": self.error,
            "attempts": self.attempts,
            "started_at": self.started_at,
            "finished_at": self.finished_at,
            "duration_s": None if self.started_at is None else round(self.finished_at - self.started_at, 6),
        }


class RunStore:
    """Definitions, runs, step results, attempts and events of every app, in `workflows.db`."""

    def __init__(self, home: Path | None = None) -> None:
        self.home = Path(home or llmasos_home())
        self.db = Database(self.home / "workflows.db", MIGRATIONS)
        self.blobs = self.home / "workflow-blobs"
        self.changes = StoreChanges()

    @contextlib.contextmanager
    def _writing(self) -> Iterator[sqlite3.Connection]:
        """A transaction that, once committed, wakes whoever follows runs (their events, status)."""
        with self.db.transaction() as conn:
            yield conn
        self.changes.notify()

    # ---- definitions --------------------------------------------------------------------------

    def define(self, app: App, workflow: Workflow) -> None:
        self.db.execute(
            "INSERT OR REPLACE INTO definitions (app_id, name, spec, created_at) VALUES (?, ?, ?, ?)",
            (app.identity, workflow.name, dumps(workflow), time.time()),
        )

    def definition(self, app: App, name: str) -> Workflow | None:
        rows = self.db.execute(
            "SELECT spec FROM definitions WHERE app_id = ? AND name = ?", (app.identity, name)
        )
        return parse(json.loads(rows[0]["spec"])) if rows else None

    def definitions(self, app: App) -> list[Workflow]:
        rows = self.db.execute("SELECT spec FROM definitions WHERE app_id = ? ORDER BY name", (app.identity,))
        return [parse(json.loads(row["spec"])) for row in rows]

    # ---- runs ---------------------------------------------------------------------------------

    def create_run(
        self,
        app: App,
        workflow: Workflow,
        inputs: dict,
        *,
        parent: str | None = None,
        run_id: str | None = None,
    ) -> str:
        """A new pending run (or, for a sub-workflow's fixed id, the one already made)."""
        run_id = run_id or uuid.uuid4().hex[:16]
        now = time.time()
        depth = 0 if parent is None else self.run(parent)["depth"] + 1
        with self._writing() as conn:
            conn.execute(
                "INSERT OR IGNORE INTO runs (id, app, app_id, workflow, spec, inputs, status, parent, depth, "
                "created_at, updated_at) VALUES (?, ?, ?, ?, ?, ?, 'pending', ?, ?, ?, ?)",
                (
                    run_id,
                    app.name,
                    app.identity,
                    workflow.name,
                    dumps(workflow),
                    _seal(app.identity, json.dumps(inputs)),
                    parent,
                    depth,
                    now,
                    now,
                ),
            )
            _event(conn, run_id, "run_created", data={"workflow": workflow.name})
        return run_id

    def run(self, run_id: str, app: App | None = None) -> dict:
        """The run's record; WorkflowNotFoundError if there is none (or `app` may not see it)."""
        rows = self.db.execute("SELECT * FROM runs WHERE id = ?", (run_id,))
        if not rows or (app is not None and not app.is_admin and rows[0]["app_id"] != app.identity):
            raise WorkflowNotFoundError(f"no workflow run {run_id!r}; `llmasos workflow ps` lists the runs")
        row = dict(rows[0])
        row["inputs"] = json.loads(_open(row["inputs"]))
        row["output"] = json.loads(_open(row["output"])) if row["output"] is not None else None
        return row

    def spec_of(self, run: dict) -> Workflow:
        return parse(json.loads(run["spec"]))

    def runs(self, app: App, *, limit: int = 100, status: str | None = None) -> list[dict]:
        where, params = ["parent IS NULL"], []
        if not app.is_admin:
            where.append("app_id = ?")
            params.append(app.identity)
        if status:
            where.append("status = ?")
            params.append(status)
        rows = self.db.execute(
            "SELECT id, app, workflow, status, error, created_at, updated_at, finished_at FROM runs "
            f"WHERE {' AND '.join(where)} ORDER BY created_at DESC LIMIT ?",
            (*params, limit),
        )
        return [dict(row) for row in rows]

    def unfinished(self) -> list[dict]:
        """Top-level runs a server start resumes (sub-workflows resume inside their parent's step)."""
        rows = self.db.execute(
            "SELECT id, app, app_id FROM runs WHERE status IN ('pending', 'running', 'waiting') "
            "AND parent IS NULL ORDER BY created_at"
        )
        return [dict(row) for row in rows]

    def set_status(self, run_id: str, status: str, *, error: str | None = None, output: Any = None) -> None:
        now = time.time()
        finished = now if status in FINISHED else None
        sealed = None if output is None else _seal(self._owner(run_id), json.dumps(output))
        with self._writing() as conn:
            conn.execute(
                "UPDATE runs SET status = ?, error = ?, output = ?, updated_at = ?, finished_at = ? "
                "WHERE id = ?",
                (status, error, sealed, now, finished, run_id),
            )
            _event(conn, run_id, f"run_{status}", data={"error": error} if error else None)

    def reopen(self, run_id: str) -> None:
        """A failed or cancelled run made pending again: its failed results are dropped (those steps
        run again), everything that succeeded stays."""
        with self._writing() as conn:
            conn.execute("DELETE FROM step_results WHERE run_id = ? AND status = 'failed'", (run_id,))
            conn.execute(
                "UPDATE runs SET status = 'pending', error = NULL, finished_at = NULL, updated_at = ? "
                "WHERE id = ?",
                (time.time(), run_id),
            )
            _event(conn, run_id, "run_resumed")

    # ---- step results -------------------------------------------------------------------------

    def results(self, run_id: str) -> dict[tuple[str, int], StepRecord]:
        rows = self.db.execute("SELECT * FROM step_results WHERE run_id = ?", (run_id,))
        return {(row["step"], row["item"]): self._record(row) for row in rows}

    def commit(
        self,
        run_id: str,
        step: str,
        item: int,
        status: str,
        *,
        output: Any = None,
        error: str | None = None,
        attempts: int = 0,
        started_at: float | None = None,
    ) -> StepRecord:
        """Commit one result (durable when this returns); a second commit of the same (step, item)
        keeps the first and returns it."""
        text, blob = self._encode(output, self._owner(run_id))
        now = time.time()
        with self._writing() as conn:
            cursor = conn.execute(
                "INSERT OR IGNORE INTO step_results (run_id, step, item, status, output, blob, error, "
                "attempts, started_at, finished_at) VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?)",
                (run_id, step, item, status, text, blob, error, attempts, started_at, now),
            )
            if cursor.rowcount:
                conn.execute(
                    "UPDATE attempts SET ended_at = ? WHERE run_id = ? AND step = ? AND item = ? "
                    "AND ended_at IS NULL",
                    (now, run_id, step, item),
                )
                _event(conn, run_id, f"step_{status}", step, item, {"error": error} if error else None)
        return self.results(run_id)[(step, item)]

    def start_attempt(self, run_id: str, step: str, item: int) -> int:
        """Open the next attempt; its number is one more than the attempts that failed, so an attempt
        a crash cut short is tried again under its own number."""
        with self._writing() as conn:
            failed = conn.execute(
                "SELECT COUNT(*) FROM attempts WHERE run_id = ? AND step = ? AND item = ? "
                "AND error IS NOT NULL",
                (run_id, step, item),
            ).fetchone()[0]
            attempt = failed + 1
            conn.execute(
                "INSERT INTO attempts (run_id, step, item, attempt, started_at) VALUES (?, ?, ?, ?, ?)",
                (run_id, step, item, attempt, time.time()),
            )
            _event(conn, run_id, "step_started", step, item, {"attempt": attempt})
        return attempt

    def fail_attempt(self, run_id: str, step: str, item: int, error: str) -> None:
        with self._writing() as conn:
            conn.execute(
                "UPDATE attempts SET ended_at = ?, error = ? WHERE run_id = ? AND step = ? AND item = ? "
                "AND ended_at IS NULL",
                (time.time(), error, run_id, step, item),
            )
            _event(conn, run_id, "step_attempt_failed", step, item, {"error": error})

    def attempt_rows(self, run_id: str) -> list[dict]:
        return [
            dict(r)
            for r in self.db.execute("SELECT * FROM attempts WHERE run_id = ? ORDER BY rowid", (run_id,))
        ]

    def reruns_after_commit(self) -> int:
        """Attempts started after their step's result was committed: must stay 0 (the chaos check)."""
        rows = self.db.execute(
            "SELECT COUNT(*) AS n FROM attempts a JOIN step_results r ON a.run_id = r.run_id "
            "AND a.step = r.step AND a.item = r.item WHERE a.started_at > r.finished_at"
        )
        return rows[0]["n"]

    # ---- events -------------------------------------------------------------------------------

    def event(self, run_id: str, type_: str, step: str | None = None, data: dict | None = None) -> None:
        with self._writing() as conn:
            _event(conn, run_id, type_, step, None, data)

    def events(self, run_id: str, after: int = 0) -> list[dict]:
        rows = self.db.execute(
            "SELECT id, at, type, step, item, data FROM events WHERE run_id = ? AND id > ? ORDER BY id",
            (run_id, after),
        )
        return [{**dict(row), "data": json.loads(row["data"]) if row["data"] else None} for row in rows]

    # ---- outputs ------------------------------------------------------------------------------

    def _owner(self, run_id: str) -> str:
        """The identity of the app whose run this is (whose data key seals its data)."""
        rows = self.db.execute("SELECT app_id FROM runs WHERE id = ?", (run_id,))
        return rows[0]["app_id"] if rows else ""

    def _encode(self, output: Any, owner: str) -> tuple[str | None, str | None]:
        """(text, blob name): a result sealed under its app's data key, in the row or, when large,
        in a blob file named by a digest of its app and content (one app's blob never serves another's)."""
        if output is None:
            return None, None
        text = json.dumps(output, ensure_ascii=False)
        if len(text.encode()) <= BLOB_BYTES:
            return _seal(owner, text), None
        digest = hashlib.sha256(f"{owner}\0{text}".encode()).hexdigest()
        path = self.blobs / f"{digest}.json"
        if not path.exists():
            private_dir(self.blobs)
            write_private(path, _seal(owner, text))  # durable before the row that names it commits
        return None, digest

    def _record(self, row: sqlite3.Row) -> StepRecord:
        if row["blob"]:
            output = json.loads(_open((self.blobs / f"{row['blob']}.json").read_text()))
        else:
            output = json.loads(_open(row["output"])) if row["output"] is not None else None
        return StepRecord(
            row["step"],
            row["item"],
            row["status"],
            output,
            row["error"],
            row["attempts"],
            row["started_at"],
            row["finished_at"],
        )


def _event(
    conn: sqlite3.Connection,
    run_id: str,
    type_: str,
    step: str | None = None,
    item: int | None = None,
    data: dict | None = None,
) -> None:
    conn.execute(
        "INSERT INTO events (run_id, at, type, step, item, data) VALUES (?, ?, ?, ?, ?, ?)",
        (
            run_id,
            time.time(),
            type_,
            step,
            None if item == WHOLE else item,
            json.dumps(data) if data else None,
        ),
    )


def _seal(owner: str, text: str) -> str:
    """Run data (inputs, results, outputs) sealed under the app's data key (security/data_keys.py)."""
    return data_keys().seal_text(owner, text, WORKFLOW_PURPOSE) if owner else text


def _open(stored: str) -> str:
    return data_keys().open_text(stored, WORKFLOW_PURPOSE)
