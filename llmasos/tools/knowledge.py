"""The `knowledge` tool: a small knowledge graph of (subject, relation, object) triples per app.

Triples live in `$LLMASOS_HOME/knowledge.db`, keyed by app (`App.identity`, never its name): every
query and removal is scoped to the calling app, so apps never see each other's facts, and an app
created with a removed app's name starts with none. Rows from before ids were keyed by name; an
app takes over those written while it existed (not those from before its creation: a
predecessor's). Matching ignores case and surrounding spaces;
the text is stored as given. A query by entity finds the triples where it is the subject (outgoing)
or the object (incoming), so a graph can be walked in both directions.
"""

from __future__ import annotations

import sqlite3
import threading
import time
from pathlib import Path
from typing import ClassVar

from llmasos.errors import InvalidRequestError
from llmasos.programs.base import SideEffect
from llmasos.security.apps import App
from llmasos.storage.db import Database
from llmasos.tools.base import Tool, ToolContext, ToolResult

MAX_TEXT_CHARS = 500
DEFAULT_LIMIT = 50


def _create_triples_table(conn: sqlite3.Connection) -> None:
    conn.execute(
        """CREATE TABLE triples (
            id INTEGER PRIMARY KEY,
            app TEXT NOT NULL,
            subject TEXT NOT NULL COLLATE NOCASE,
            relation TEXT NOT NULL COLLATE NOCASE,
            object TEXT NOT NULL COLLATE NOCASE,
            created_at REAL NOT NULL,
            UNIQUE (app, subject, relation, object)
        )"""
    )
    # One index per direction of a walk, and one for "every X of this relation".
    conn.execute("CREATE INDEX triples_by_subject ON triples (app, subject, relation)")
    conn.execute("CREATE INDEX triples_by_object ON triples (app, object, relation)")
    conn.execute("CREATE INDEX triples_by_relation ON triples (app, relation)")


def _mark_name_keyed_rows(conn: sqlite3.Connection) -> None:
    """Rows so far are keyed by app name; `legacy` marks them until their app takes them over."""
    conn.execute("ALTER TABLE triples ADD COLUMN legacy INTEGER NOT NULL DEFAULT 0")
    conn.execute("UPDATE triples SET legacy = 1")
    conn.execute("CREATE INDEX triples_legacy ON triples (legacy, app)")


def _create_applied_keys_table(conn: sqlite3.Connection) -> None:
    """Writes done under an idempotency key, with their outcome: the same key again writes nothing
    and answers the same (a workflow step re-run after a crash)."""
    conn.execute(
        """CREATE TABLE applied_keys (
            app TEXT NOT NULL,
            key TEXT NOT NULL,
            changed INTEGER NOT NULL,
            created_at REAL NOT NULL,
            PRIMARY KEY (app, key)
        )"""
    )


MIGRATIONS = [_create_triples_table, _mark_name_keyed_rows, _create_applied_keys_table]


class KnowledgeGraph:
    """The triples of every app in one SQLite file; each method acts for one app only."""

    def __init__(self, path: Path) -> None:
        self.db = Database(path, MIGRATIONS)

    def _owner(self, app: App) -> str:
        """The key of `app`'s rows, after taking over its name-keyed rows from before ids."""
        owner = app.identity
        if app.id:
            self.db.execute(
                "UPDATE OR IGNORE triples SET app = ?, legacy = 0 "
                "WHERE legacy = 1 AND app = ? AND created_at >= ?",
                (owner, app.name, app.created_at),
            )
        return owner

    def add(self, app: App, subject: str, relation: str, object: str, *, key: str = "") -> bool:
        """Store a triple; False if the app already had it. With `key`, a second call of the same
        key writes nothing and answers what the first did."""
        subject, relation, object = (_clean(v, k) for k, v in _named(subject, relation, object))
        owner = self._owner(app)
        with self.db.transaction() as conn:
            done = _applied(conn, owner, key)
            if done is not None:
                return done
            cursor = conn.execute(
                "INSERT OR IGNORE INTO triples (app, subject, relation, object, created_at) "
                "VALUES (?, ?, ?, ?, ?)",
                (owner, subject, relation, object, time.time()),
            )
            return _apply(conn, owner, key, cursor.rowcount == 1)

    def query(
        self, app: App, entity: str | None = None, relation: str | None = None, limit: int = DEFAULT_LIMIT
    ) -> list[dict]:
        """The app's triples touching `entity` (as subject or object) and/or of `relation`, oldest first.

        Each comes with `direction`: "outgoing" when `entity` is its subject, "incoming" when it is
        its object (absent without an entity)."""
        where, params = ["app = ?"], [self._owner(app)]
        if entity is not None:
            entity = _clean(entity, "entity")
            where.append("(subject = ? OR object = ?)")
            params += [entity, entity]
        if relation is not None:
            where.append("relation = ?")
            params.append(_clean(relation, "relation"))
        rows = self.db.execute(
            f"SELECT subject, relation, object FROM triples WHERE {' AND '.join(where)} ORDER BY id LIMIT ?",
            (*params, limit),
        )
        triples = []
        for row in rows:
            triple = {"subject": row["subject"], "relation": row["relation"], "object": row["object"]}
            if entity is not None:
                triple["direction"] = "outgoing" if row["subject"].lower() == entity.lower() else "incoming"
            triples.append(triple)
        return triples

    def remove(self, app: App, subject: str, relation: str, object: str, *, key: str = "") -> bool:
        """Delete one of the app's triples; False if it had no such triple (`key`: as in `add`)."""
        subject, relation, object = (_clean(v, k) for k, v in _named(subject, relation, object))
        owner = self._owner(app)
        with self.db.transaction() as conn:
            done = _applied(conn, owner, key)
            if done is not None:
                return done
            cursor = conn.execute(
                "DELETE FROM triples WHERE app = ? AND subject = ? AND relation = ? AND object = ?",
                (owner, subject, relation, object),
            )
            return _apply(conn, owner, key, cursor.rowcount > 0)

    def applied_keys(self, app: App) -> int:
        """How many keyed writes the app has made (each counted once however often it was sent)."""
        rows = self.db.execute("SELECT COUNT(*) AS n FROM applied_keys WHERE app = ?", (self._owner(app),))
        return rows[0]["n"]

    def count(self, app: App) -> int:
        return self.db.execute("SELECT COUNT(*) AS n FROM triples WHERE app = ?", (self._owner(app),))[0]["n"]


def _applied(conn: sqlite3.Connection, owner: str, key: str) -> bool | None:
    """What the write of `key` did, if it was made before (inside the write's transaction)."""
    if not key:
        return None
    row = conn.execute("SELECT changed FROM applied_keys WHERE app = ? AND key = ?", (owner, key)).fetchone()
    return None if row is None else bool(row["changed"])


def _apply(conn: sqlite3.Connection, owner: str, key: str, changed: bool) -> bool:
    """Record the write of `key` in the same transaction as the write itself."""
    if key:
        conn.execute(
            "INSERT INTO applied_keys (app, key, changed, created_at) VALUES (?, ?, ?, ?)",
            (owner, key, int(changed), time.time()),
        )
    return changed


def _named(subject: str, relation: str, object: str) -> list[tuple[str, str]]:
    return [("subject", subject), ("relation", relation), ("object", object)]


def _clean(value: str | None, name: str) -> str:
    text = (value or "").strip()
    if not text:
        raise InvalidRequestError(f"{name} is empty; give the {name} as non-empty text")
    if len(text) > MAX_TEXT_CHARS:
        raise InvalidRequestError(f"{name} is {len(text)} characters; the limit is {MAX_TEXT_CHARS}")
    return text


_TEXT = {"type": "string", "minLength": 1, "maxLength": MAX_TEXT_CHARS}
_TRIPLE = {
    "type": "object",
    "properties": {
        "subject": {"type": "string"},
        "relation": {"type": "string"},
        "object": {"type": "string"},
        "direction": {"enum": ["outgoing", "incoming"]},
    },
    "required": ["subject", "relation", "object"],
}


class KnowledgeTool(Tool):
    name = "knowledge"
    description = (
        "Remember and look up facts as (subject, relation, object) triples, private to the calling app: "
        "add a fact, query the facts about an entity and/or of a relation, or remove a fact."
    )
    touches_files = True  # its own database under $LLMASOS_HOME, never a caller's path
    examples: ClassVar[tuple[str, ...]] = (
        "Remember that my sister lives in Berlin",
        "Note that the project deadline is Friday",
        "What do you know about Bob?",
        "Where does my sister live, as I told you before?",
        "Forget that Bob likes tea",
    )

    @property
    def side_effects(self) -> frozenset[SideEffect]:
        return frozenset({SideEffect.APP_DATA})

    parameters: ClassVar[dict] = {
        "type": "object",
        "properties": {
            "operation": {"enum": ["add", "query", "remove"], "description": "what to do"},
            "subject": {**_TEXT, "description": "add/remove: the triple's subject, e.g. 'Ada Lovelace'"},
            "relation": {**_TEXT, "description": "add/remove: the relation; query: filter by it"},
            "object": {**_TEXT, "description": "add/remove: the triple's object, e.g. 'London'"},
            "entity": {**_TEXT, "description": "query: facts where this is the subject or the object"},
            "limit": {"type": "integer", "minimum": 1, "maximum": 1000, "default": DEFAULT_LIMIT},
        },
        "required": ["operation"],
        "additionalProperties": False,
    }
    result_schema: ClassVar[dict] = {
        "type": "object",
        "properties": {
            "operation": {"enum": ["add", "query", "remove"]},
            "changed": {"type": "boolean"},
            "triples": {"type": "array", "items": _TRIPLE},
        },
        "required": ["operation"],
    }

    def __init__(self) -> None:
        self._graphs: dict[Path, KnowledgeGraph] = {}
        self._lock = threading.Lock()

    def graph(self, context: ToolContext) -> KnowledgeGraph:
        """The graph file of the context's $LLMASOS_HOME, opened once per tool instance."""
        path = context.home / "knowledge.db"
        with self._lock:
            if path not in self._graphs:
                self._graphs[path] = KnowledgeGraph(path)
            return self._graphs[path]

    def run(self, args: dict, context: ToolContext) -> ToolResult:
        operation, graph, app = args["operation"], self.graph(context), context.app
        if operation == "query":
            triples = graph.query(app, args.get("entity"), args.get("relation"), args["limit"])
            return ToolResult(self.name, {"operation": operation, "triples": triples})
        missing = [k for k in ("subject", "relation", "object") if k not in args]
        if missing:
            raise InvalidRequestError(
                f"knowledge {operation} needs subject, relation and object; missing: {', '.join(missing)}"
            )
        triple = (args["subject"].strip(), args["relation"].strip(), args["object"].strip())
        write = graph.add if operation == "add" else graph.remove
        changed = write(app, *triple, key=context.idempotency_key)
        output = {"operation": operation, "changed": changed, "triples": [dict(_named(*triple))]}
        return ToolResult(self.name, output)
