"""Ingestion: a file attached to a store is read, chunked, embedded in batches (progress kept in its
row) and written in one transaction with its status `completed`; until then search cannot see any of
it. A file whose attachment is cancelled or deleted meanwhile writes nothing. Re-indexing re-embeds
a store's chunks when the embedding model changes.
"""

from __future__ import annotations

import json
import logging
import threading
from concurrent.futures import Future, ThreadPoolExecutor
from dataclasses import dataclass
from typing import Protocol

import numpy as np

from llmasos.data.app_data import AppData, app_data
from llmasos.data.chunking import ChunkingStrategy, chunk_document
from llmasos.data.documents import read_document
from llmasos.data.quota import require_room
from llmasos.data.schema import app_folder, data_root
from llmasos.errors import LLMasOSError, StorageQuotaError, UnsupportedFileError

logger = logging.getLogger(__name__)

#: Texts per call to the embedder; it batches again inside (tools/embed.py: 32 per forward).
EMBED_BATCH = 128


class Embedder(Protocol):
    name: str

    def embed(self, texts: list[str]) -> tuple[list[list[float]], int]:
        """(unit vectors, tokens consumed)"""


@dataclass
class Ingested:
    status: str
    chunks: int = 0
    embedding_tokens: int = 0


def as_blob(vector: list[float] | np.ndarray) -> bytes:
    return np.asarray(vector, dtype=np.float32).tobytes()


def ingest_file(data: AppData, store_id: str, file_id: str, embedder: Embedder) -> Ingested:
    rows = data.db.execute(
        "SELECT f.filename, f.content, sf.chunking, sf.status FROM store_files sf JOIN files f "
        "ON f.id = sf.file_id "
        "WHERE sf.store_id = ? AND sf.file_id = ?",
        (store_id, file_id),
    )
    if not rows or rows[0]["status"] != "in_progress":
        return Ingested("gone" if not rows else rows[0]["status"])
    row = rows[0]
    try:
        content = data.open_bytes(bytes(row["content"]), f"file:{file_id}")
        document = read_document(row["filename"], content)
        strategy = ChunkingStrategy.from_openai(json.loads(row["chunking"]))
        chunks = chunk_document(document, strategy)
        if not chunks:
            raise UnsupportedFileError(f"{row['filename']!r} holds no text to index")
    except UnsupportedFileError as err:
        return _fail(data, store_id, file_id, "unsupported_file", err.message)
    _progress(data, store_id, file_id, 0, len(chunks))
    blobs, tokens = [], 0
    for start in range(0, len(chunks), EMBED_BATCH):
        batch = chunks[start : start + EMBED_BATCH]
        vectors, used = embedder.embed([c.search_text for c in batch])
        blobs.extend(as_blob(v) for v in vectors)
        tokens += used
        if not _progress(data, store_id, file_id, start + len(batch), len(chunks)):
            return Ingested("cancelled", embedding_tokens=tokens)
    usage_bytes = sum(len(c.text) + len(c.search_text) + len(b) for c, b in zip(chunks, blobs, strict=True))
    try:
        with data.db.transaction() as conn:
            status = conn.execute(
                "SELECT status FROM store_files WHERE store_id = ? AND file_id = ?", (store_id, file_id)
            ).fetchone()
            if status is None or status[0] != "in_progress":
                return Ingested("cancelled" if status else "gone", embedding_tokens=tokens)
            require_room(conn, usage_bytes, 0, f"indexing {row['filename']!r}")
            conn.execute("DELETE FROM chunks WHERE store_id = ? AND file_id = ?", (store_id, file_id))
            conn.executemany(
                "INSERT INTO chunks (store_id, file_id, ordinal, text, search_text, start, end, heading, "
                "meta, "
                "embedding, model) VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?)",
                [
                    (
                        store_id,
                        file_id,
                        i,
                        c.text,
                        c.search_text,
                        c.start,
                        c.end,
                        c.heading,
                        c.meta_json(),
                        blob,
                        embedder.name,
                    )
                    for i, (c, blob) in enumerate(zip(chunks, blobs, strict=True))
                ],
            )
            conn.execute(
                "UPDATE store_files SET status = 'completed', usage_bytes = ?, embedding_tokens = ?, "
                "last_error = NULL "
                "WHERE store_id = ? AND file_id = ?",
                (usage_bytes, tokens, store_id, file_id),
            )
            conn.execute(
                "UPDATE vector_stores SET embedding_model = coalesce(embedding_model, ?) WHERE id = ?",
                (embedder.name, store_id),
            )
    except StorageQuotaError as err:
        return _fail(data, store_id, file_id, "invalid_file", err.message)
    return Ingested("completed", len(chunks), tokens)


def _progress(data: AppData, store_id: str, file_id: str, done: int, total: int) -> bool:
    """Record progress; whether the attachment is still in progress (not cancelled nor deleted)."""
    with data.db.transaction() as conn:
        changed = conn.execute(
            "UPDATE store_files SET chunks_done = ?, chunks_total = ? "
            "WHERE store_id = ? AND file_id = ? AND status = 'in_progress'",
            (done, total, store_id, file_id),
        ).rowcount
    return changed == 1


def _fail(data: AppData, store_id: str, file_id: str, code: str, message: str) -> Ingested:
    data.db.execute(
        "UPDATE store_files SET status = 'failed', last_error = ? WHERE store_id = ? AND file_id = ? "
        "AND status = 'in_progress'",
        (json.dumps({"code": code, "message": message}), store_id, file_id),
    )
    return Ingested("failed")


def reindex_store(data: AppData, store_id: str, embedder: Embedder) -> int:
    """Re-embed every chunk of the store made by another model; the tokens it took."""
    tokens = 0
    while True:
        rows = data.db.execute(
            "SELECT id, search_text FROM chunks WHERE store_id = ? AND model != ? LIMIT ?",
            (store_id, embedder.name, EMBED_BATCH),
        )
        if not rows:
            break
        vectors, used = embedder.embed([r["search_text"] for r in rows])
        tokens += used
        with data.db.transaction() as conn:
            conn.executemany(
                "UPDATE chunks SET embedding = ?, model = ? WHERE id = ?",
                [(as_blob(v), embedder.name, r["id"]) for r, v in zip(rows, vectors, strict=True)],
            )
    data.db.execute("UPDATE vector_stores SET embedding_model = ? WHERE id = ?", (embedder.name, store_id))
    return tokens


class Ingestor:
    """Runs ingestions one at a time on a background thread (embedding takes the cores it has)."""

    def __init__(self, embedder_factory, on_done=None) -> None:
        self._embedder_factory = embedder_factory
        self._on_done = on_done  # (owner, store_id, file_id, Ingested) -> None: accounting
        self._pool = ThreadPoolExecutor(1, thread_name_prefix="llmasos-ingest")
        self._lock = threading.Lock()
        self._pending: set[tuple[str, str, str]] = set()

    def submit(self, owner: str, store_id: str, file_id: str) -> Future | None:
        key = (owner, store_id, file_id)
        with self._lock:
            if key in self._pending:
                return None
            self._pending.add(key)
        return self._pool.submit(self._run, key)

    def _run(self, key: tuple[str, str, str]) -> Ingested:
        owner, store_id, file_id = key
        with self._lock:
            self._pending.discard(key)
        if not app_folder(owner).exists():  # the app was deleted meanwhile: nothing to write to
            return Ingested("gone")
        try:
            result = ingest_file(app_data(owner), store_id, file_id, self._embedder_factory())
        except LLMasOSError as err:
            result = self._fail_if_there(owner, store_id, file_id, err.message)
        except Exception:
            logger.exception("ingesting a file failed")
            result = self._fail_if_there(owner, store_id, file_id, "indexing failed on the server; retry")
        if self._on_done is not None:
            self._on_done(owner, store_id, file_id, result)
        return result

    @staticmethod
    def _fail_if_there(owner: str, store_id: str, file_id: str, message: str) -> Ingested:
        if not app_folder(owner).exists():
            return Ingested("gone")
        return _fail(app_data(owner), store_id, file_id, "server_error", message)

    def resume(self) -> int:
        """Queue again every file left `in_progress` (a server that stopped mid-ingestion)."""
        count = 0
        root = data_root()
        for folder in sorted(root.iterdir()) if root.exists() else []:
            if not (folder / "data.db").exists():
                continue
            owner = folder.name.replace("-", ":", 1)
            for row in app_data(owner).db.execute(
                "SELECT store_id, file_id FROM store_files WHERE status = 'in_progress'"
            ):
                self.submit(owner, row["store_id"], row["file_id"])
                count += 1
        return count

    def wait(self, future: Future | None, timeout: float | None = None) -> None:
        if future is not None:
            future.result(timeout)

    def close(self) -> None:
        """Take no more work: the queued files are dropped (still `in_progress`, the next start
        resumes them) and the one being ingested finishes, so its database is not closed under it."""
        self._pool.shutdown(wait=True, cancel_futures=True)
