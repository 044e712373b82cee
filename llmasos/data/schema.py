"""The per-app database: its file, its tables, and the ordered migrations that build them.

Each migration is a function of a connection; `schema_version` holds one row per migration applied
(with when), and SQLite's `user_version` the count, so an old file upgrades in place on open.
"""

from __future__ import annotations

import shutil
import sqlite3
import time
from pathlib import Path

from llmasos.config import llmasos_home
from llmasos.storage import encrypted_db
from llmasos.storage.db import Database, Migration


def data_root() -> Path:
    return llmasos_home() / "data"


def app_folder(identity: str) -> Path:
    """The folder of one app's data. `identity` is `App.identity` (`id:<hex>` or `name:<name>`), whose
    characters are letters, digits, '.', '_', '-' and one ':'."""
    return data_root() / identity.replace(":", "-")


def remove_app_folder(identity: str) -> bool:
    """Delete every byte of an app's data; whether there was any."""
    folder = app_folder(identity)
    if not folder.exists():
        return False
    shutil.rmtree(folder)
    return True


def _schema_version(conn: sqlite3.Connection) -> None:
    conn.execute("CREATE TABLE schema_version (version INTEGER PRIMARY KEY, name TEXT, applied_at REAL)")


def _files(conn: sqlite3.Connection) -> None:
    conn.execute(
        """CREATE TABLE files (
            id TEXT PRIMARY KEY,
            filename TEXT NOT NULL,
            purpose TEXT NOT NULL,
            bytes INTEGER NOT NULL,
            content BLOB NOT NULL,          -- the upload as sent
            created_at INTEGER NOT NULL
        )"""
    )


def _vector_stores(conn: sqlite3.Connection) -> None:
    conn.execute(
        """CREATE TABLE vector_stores (
            id TEXT PRIMARY KEY,
            name TEXT NOT NULL,
            metadata TEXT NOT NULL,         -- JSON object
            embedding_model TEXT,           -- the model its vectors came from (NULL: none yet)
            created_at INTEGER NOT NULL,
            last_active_at INTEGER NOT NULL
        )"""
    )
    conn.execute(
        """CREATE TABLE store_files (
            store_id TEXT NOT NULL REFERENCES vector_stores(id) ON DELETE CASCADE,
            file_id TEXT NOT NULL REFERENCES files(id) ON DELETE CASCADE,
            batch_id TEXT,
            status TEXT NOT NULL,           -- in_progress, completed, failed, cancelled
            last_error TEXT,                -- JSON {code, message} when failed
            attributes TEXT NOT NULL,       -- JSON object, what filters match
            chunking TEXT NOT NULL,         -- JSON {max_chunk_size_tokens, chunk_overlap_tokens}
            chunks_total INTEGER NOT NULL DEFAULT 0,
            chunks_done INTEGER NOT NULL DEFAULT 0,
            usage_bytes INTEGER NOT NULL DEFAULT 0,
            embedding_tokens INTEGER NOT NULL DEFAULT 0,
            created_at INTEGER NOT NULL,
            PRIMARY KEY (store_id, file_id)
        )"""
    )
    conn.execute(
        """CREATE TABLE chunks (
            id INTEGER PRIMARY KEY AUTOINCREMENT,  -- never reused: (count, max id) names a version
            store_id TEXT NOT NULL,
            file_id TEXT NOT NULL,
            ordinal INTEGER NOT NULL,       -- position in its file
            text TEXT NOT NULL,             -- what is shown and cited
            search_text TEXT NOT NULL,      -- what is indexed: the text with its item's fields
            start INTEGER NOT NULL,         -- character span of `text` in the file's extracted text
            end INTEGER NOT NULL,
            heading TEXT NOT NULL,
            meta TEXT NOT NULL,             -- JSON: a JSON-lines item's other fields
            embedding BLOB NOT NULL,        -- float32, unit length
            model TEXT NOT NULL,
            FOREIGN KEY (store_id, file_id) REFERENCES store_files(store_id, file_id) ON DELETE CASCADE
        )"""
    )
    conn.execute("CREATE INDEX chunks_by_file ON chunks (store_id, file_id, ordinal)")
    # BM25 over search_text; external content, kept in step by triggers (cascaded deletes included).
    conn.execute(
        "CREATE VIRTUAL TABLE chunks_fts USING fts5(search_text, content='chunks', content_rowid='id', "
        "tokenize='porter unicode61')"
    )
    conn.execute(
        "CREATE TRIGGER chunks_ai AFTER INSERT ON chunks BEGIN "
        "INSERT INTO chunks_fts(rowid, search_text) VALUES (new.id, new.search_text); END"
    )
    conn.execute(
        "CREATE TRIGGER chunks_ad AFTER DELETE ON chunks BEGIN "
        "INSERT INTO chunks_fts(chunks_fts, rowid, search_text) VALUES ('delete', old.id, "
        "old.search_text); END"
    )
    conn.execute(
        """CREATE TABLE batches (
            id TEXT PRIMARY KEY,
            store_id TEXT NOT NULL REFERENCES vector_stores(id) ON DELETE CASCADE,
            created_at INTEGER NOT NULL,
            cancelled INTEGER NOT NULL DEFAULT 0
        )"""
    )


def _kv(conn: sqlite3.Connection) -> None:
    conn.execute(
        """CREATE TABLE kv (
            key TEXT PRIMARY KEY,
            value TEXT NOT NULL,            -- JSON
            expires_at REAL,                -- unix seconds; NULL: never
            updated_at REAL NOT NULL
        )"""
    )


def _quota(conn: sqlite3.Connection) -> None:
    conn.execute(
        "CREATE TABLE quota (id INTEGER PRIMARY KEY CHECK (id = 1), max_bytes INTEGER, max_items INTEGER)"
    )


def _chunk_versions(conn: sqlite3.Connection) -> None:
    """A counter per store that every chunk written or deleted moves, so a search learns whether its
    cached vector index is current from one row instead of reading every chunk id."""
    conn.execute("ALTER TABLE vector_stores ADD COLUMN chunks_version INTEGER NOT NULL DEFAULT 0")
    for event, row in (("INSERT", "new"), ("DELETE", "old"), ("UPDATE", "new")):
        conn.execute(
            f"CREATE TRIGGER chunks_version_{event.lower()} AFTER {event} ON chunks BEGIN "
            f"UPDATE vector_stores SET chunks_version = chunks_version + 1 WHERE id = {row}.store_id; END"
        )


def _conversations(conn: sqlite3.Connection) -> None:
    """Conversations (OpenAI's `/v1/conversations`, and the threads that `previous_response_id`
    chains make), their items in order, a BM25 index over the items for recall, and responses."""
    conn.execute(
        """CREATE TABLE conversations (
            id TEXT PRIMARY KEY,
            metadata TEXT NOT NULL,         -- JSON object of strings
            core TEXT NOT NULL,             -- JSON list of facts kept in every context
            summary TEXT NOT NULL,          -- running summary of the items up to summary_upto
            summary_upto INTEGER NOT NULL,  -- seq of the last item the summary covers (0: none)
            is_thread INTEGER NOT NULL,     -- 1: made for a chain of responses, not by the client
            created_at INTEGER NOT NULL
        )"""
    )
    conn.execute(
        """CREATE TABLE conversation_items (
            seq INTEGER PRIMARY KEY AUTOINCREMENT,  -- the order of the conversation, never reused
            id TEXT NOT NULL,               -- msg_...; a forked thread keeps its items' ids
            conversation_id TEXT NOT NULL REFERENCES conversations(id) ON DELETE CASCADE,
            role TEXT NOT NULL,             -- user, assistant, system, developer
            text TEXT NOT NULL,
            tokens INTEGER,                 -- its length for tokens_model (NULL: not counted yet)
            tokens_model TEXT,
            response_id TEXT,               -- the response that wrote it, if one did
            created_at INTEGER NOT NULL
        )"""
    )
    conn.execute("CREATE INDEX items_by_conversation ON conversation_items (conversation_id, seq)")
    conn.execute(
        "CREATE VIRTUAL TABLE items_fts USING fts5(text, content='conversation_items', "
        "content_rowid='seq', tokenize='porter unicode61')"
    )
    conn.execute(
        "CREATE TRIGGER items_ai AFTER INSERT ON conversation_items BEGIN "
        "INSERT INTO items_fts(rowid, text) VALUES (new.seq, new.text); END"
    )
    conn.execute(
        "CREATE TRIGGER items_ad AFTER DELETE ON conversation_items BEGIN "
        "INSERT INTO items_fts(items_fts, rowid, text) VALUES ('delete', old.seq, old.text); END"
    )
    conn.execute(
        """CREATE TABLE responses (
            id TEXT PRIMARY KEY,
            conversation_id TEXT NOT NULL REFERENCES conversations(id) ON DELETE CASCADE,
            last_seq INTEGER NOT NULL,      -- seq of its last item: where a chain from it continues
            body TEXT NOT NULL,             -- the response object (JSON)
            context TEXT NOT NULL,          -- what went into the model's context and why (JSON)
            input_item_ids TEXT NOT NULL,   -- JSON list
            created_at INTEGER NOT NULL
        )"""
    )
    conn.execute("CREATE INDEX responses_by_conversation ON responses (conversation_id, last_seq)")


def _kv_applied_keys(conn: sqlite3.Connection) -> None:
    """Key-value writes made under an idempotency key (a workflow step's run, step, item and attempt)
    and what they answered: the same key again writes nothing and answers the same, so a step re-run
    after a crash writes once."""
    conn.execute(
        """CREATE TABLE kv_applied_keys (
            key TEXT PRIMARY KEY,
            answer TEXT NOT NULL,           -- JSON: what the write returned
            created_at REAL NOT NULL
        )"""
    )


def _pseudonyms(conn: sqlite3.Connection) -> None:
    """The app's pseudonym vault (data/pseudonym_store.py), so stored placeholders restore after a
    restart."""
    conn.execute(
        """CREATE TABLE pseudonyms (
            placeholder TEXT PRIMARY KEY,   -- <PERSON_1>
            value TEXT NOT NULL,            -- sealed under the app's data key (llmenc1:...)
            added_at REAL NOT NULL
        )"""
    )


def _sealed_conversation_items(conn: sqlite3.Connection) -> None:
    """Conversation items are stored sealed under the app's data key (data/conversations.py), so
    recall indexes `terms`, their words as keyed hashes (data/search_terms.py), instead of `text`.
    Items written before keep their plaintext and are not recalled (this came the day items did)."""
    conn.execute("DROP TRIGGER items_ai")
    conn.execute("DROP TRIGGER items_ad")
    conn.execute("DROP TABLE items_fts")
    conn.execute("ALTER TABLE conversation_items ADD COLUMN terms TEXT NOT NULL DEFAULT ''")
    # No porter stemming: a hashed word has no stem.
    conn.execute(
        "CREATE VIRTUAL TABLE items_fts USING fts5(terms, content='conversation_items', "
        "content_rowid='seq', tokenize='unicode61')"
    )
    conn.execute(
        "CREATE TRIGGER items_ai AFTER INSERT ON conversation_items BEGIN "
        "INSERT INTO items_fts(rowid, terms) VALUES (new.seq, new.terms); END"
    )
    conn.execute(
        "CREATE TRIGGER items_ad AFTER DELETE ON conversation_items BEGIN "
        "INSERT INTO items_fts(items_fts, rowid, terms) VALUES ('delete', old.seq, old.terms); END"
    )


def _versioned(number: int, migration: Migration) -> Migration:
    def run(conn: sqlite3.Connection) -> None:
        migration(conn)
        conn.execute(
            "INSERT INTO schema_version VALUES (?, ?, ?)",
            (number, migration.__name__.strip("_"), time.time()),
        )

    run.__name__ = migration.__name__
    return run


MIGRATIONS: list[Migration] = [
    _versioned(number, migration)
    for number, migration in enumerate(
        [
            _schema_version,
            _files,
            _vector_stores,
            _kv,
            _quota,
            _chunk_versions,
            _conversations,
            _kv_applied_keys,
            _pseudonyms,
            _sealed_conversation_items,
        ],
        start=1,
    )
]


def database_path(identity: str) -> Path:
    return app_folder(identity) / "data.db"


def open_database(identity: str, key: bytes) -> Database:
    """The app's database, encrypted under `key` (SQLCipher), created (0600, WAL) and migrated to
    the latest schema; a plaintext file left by an earlier version is converted first."""
    path = database_path(identity)
    encrypted_db.encrypt_in_place(path, key)
    return Database(path, MIGRATIONS, key=key)
