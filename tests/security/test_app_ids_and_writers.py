"""App ids survive the migration from name-keyed state; audit writers in parallel keep one chain."""

from __future__ import annotations

import json
import sqlite3
import threading
from pathlib import Path

from llmasos.security.apps import App, AppRegistry
from llmasos.security.audit import AuditLog, AuditRecord


def test_apps_from_before_ids_get_one_each_and_keep_their_keys(llmasos_home: Path):
    path = llmasos_home / "state.db"
    from llmasos.security.apps import MIGRATIONS
    from llmasos.storage.db import Database

    old = Database(path, MIGRATIONS[:2])  # the schema as the version before ids left it
    for name in ("one", "two"):
        # neither an id nor a personal-data policy existed then
        fields = {k: v for k, v in App(name).__dict__.items() if k not in ("id", "pii")}
        fields["capabilities"] = list(fields["capabilities"])
        old.execute(
            "INSERT INTO apps (name, config, created_at) VALUES (?, ?, ?)",
            (name, json.dumps(fields), fields["created_at"]),
        )
    old.execute("INSERT INTO api_keys (digest, app, hint, created_at) VALUES ('d', 'one', 'lmos-x…', 0)")
    old.close()
    registry = AppRegistry()
    one, two = registry.get("one"), registry.get("two")
    assert len(one.id) == 32 and len(two.id) == 32 and one.id != two.id
    assert registry.key_hints("one") == ["lmos-x…"]
    assert registry.get("one").id == one.id  # stable across reads
    registry.remove("one")
    again = registry.create(App("one"))
    assert again.id not in (one.id, two.id)


def test_parallel_writers_keep_one_chain_and_one_anchor(llmasos_home: Path):
    """Two logs on one file (as a server and a CLI command are), each written from two threads."""
    logs = [AuditLog(), AuditLog()]

    def write(log: AuditLog, n: int) -> None:
        for i in range(n):
            log.record(AuditRecord(app="app", call="ps", outcome="ok", target=str(i)))

    threads = [threading.Thread(target=write, args=(log, 25)) for log in logs for _ in range(2)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    report = AuditLog().verify()
    assert report.intact, report.problems
    assert report.rows == 101  # 100 and the row that starts the keyed chain
    anchor = json.loads((llmasos_home / "audit.anchor").read_text())
    assert anchor["rows"] == 101 and anchor["last_id"] == 101
    conn = sqlite3.connect(llmasos_home / "audit.db")
    assert conn.execute("SELECT COUNT(DISTINCT prev_hash) FROM audit").fetchone()[0] == 101
    conn.close()
