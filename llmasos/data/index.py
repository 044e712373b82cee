"""The vector index of one vector store: exact cosine (numpy) while it is small, HNSW graph search
(usearch) past `EXACT_MAX_ROWS`, both kept in step with the store's rows in SQLite incrementally.

Why these two, measured here (2 cores shared with seven other engineers' work, load average 12-20):
exact search of one query over 100k 384-dimensional rows took p50 62 / p95 78 ms with numpy f32 and
42 / 94 ms with usearch's exact int8 kernel, while usearch's HNSW answered a 10k-row index in p50
0.8 ms; at 10k rows numpy on one BLAS thread takes p50 1.5 ms, exactly. sqlite-vec is brute force
only (no faster than numpy), and hnswlib would compile from source here, while usearch ships wheels
and keeps vectors as f16. The cost is HNSW's build: 100k rows (clustered synthetic vectors) took
210 s under the bench lock at load ~20 (the first search after a bulk load pays it; later changes
add or remove only their rows), then searched in p50 1.6 ms of CPU with recall@10 1.000 against
exact, and its saved graph was restored in 2 s. `benchmarks/retrieval_locomo.py --speed-only`
measures search at 10k and 100k chunks again.
The rows stay the truth; an index is a cache of them. The HNSW graph is kept on disk beside the
app's database (`indexes/<store>.<model digest>.usearch`, 0600, sealed under the app's data key),
so a restarted server restores it (100k rows: well under a second) instead of building it again;
on restore, rows added or deleted since it was saved are added or removed, and a graph of another
embedding model is never used (re-indexing writes new vectors: the next search builds anew and
replaces the file).
"""

from __future__ import annotations

import hashlib
import logging
import os
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
from threadpoolctl import ThreadpoolController

from llmasos.storage.files import open_private

logger = logging.getLogger(__name__)
_blas = ThreadpoolController()

EXACT_MAX_ROWS = 20_000
#: Extra candidates asked of HNSW when a filter will drop some.
OVERSAMPLE = 4
HNSW_CONNECTIVITY = 16
HNSW_EXPANSION_ADD = 128
HNSW_EXPANSION_SEARCH = 128
#: Seconds between saves of a graph that rows were added to or removed from (a kill loses at most
#: this much of the graph's work: restore adds the missing rows again).
SAVE_EVERY_S = 60.0


@dataclass
class VectorIndex:
    chunk_ids: np.ndarray = field(default_factory=lambda: np.zeros(0, np.int64))  # ascending
    file_ids: np.ndarray = field(default_factory=lambda: np.zeros(0, object))
    matrix: np.ndarray | None = None  # (N, dim) float32 unit rows, in chunk_ids order
    hnsw: object | None = None  # usearch Index keyed by chunk id, once past EXACT_MAX_ROWS
    version: int = -1  # the store's chunks_version these rows reflect
    saved: SavedGraph | None = None  # where the graph is kept between runs (None: memory only)
    unsaved_changes: int = 0
    saved_at: float = 0.0

    @property
    def max_id(self) -> int:
        return int(self.chunk_ids[-1]) if len(self.chunk_ids) else 0

    def update(self, current_ids: np.ndarray, new_rows: list[tuple[int, str, bytes]]) -> None:
        """Drop the rows no longer in `current_ids` and add `new_rows` (id, file id, vector blob),
        whose ids are all above `max_id`."""
        keep = np.isin(self.chunk_ids, current_ids, assume_unique=True)
        if not keep.all():
            if self.hnsw is not None:
                self.hnsw.remove(self.chunk_ids[~keep])  # type: ignore[attr-defined]
                self.unsaved_changes += int((~keep).sum())
            self.chunk_ids, self.file_ids = self.chunk_ids[keep], self.file_ids[keep]
            self.matrix = self.matrix[keep] if self.matrix is not None else None
        if new_rows:
            ids = np.asarray([r[0] for r in new_rows], np.int64)
            vectors = np.frombuffer(b"".join(r[2] for r in new_rows), np.float32).reshape(len(new_rows), -1)
            self.chunk_ids = np.concatenate([self.chunk_ids, ids])
            self.file_ids = np.concatenate([self.file_ids, np.asarray([r[1] for r in new_rows], object)])
            self.matrix = (
                vectors if self.matrix is None or not len(self.matrix) else np.vstack([self.matrix, vectors])
            )
            if self.hnsw is not None:
                self.hnsw.add(ids, vectors)  # type: ignore[attr-defined]
                self.unsaved_changes += len(ids)
        if self.hnsw is None and len(self.chunk_ids) > EXACT_MAX_ROWS:
            self.hnsw = self._restored_graph() or self._built_graph()
        if self.unsaved_changes and time.monotonic() - self.saved_at > SAVE_EVERY_S:
            self._save()

    def _built_graph(self):
        graph = _new_hnsw(self.matrix.shape[1])  # type: ignore[union-attr]
        graph.add(self.chunk_ids, self.matrix)
        self.unsaved_changes += len(self.chunk_ids)
        return graph

    def _restored_graph(self):
        """The saved graph of these vectors brought up to date with the rows, or None."""
        if self.saved is None:
            return None
        graph = self.saved.load(self.matrix.shape[1])  # type: ignore[union-attr]
        if graph is None:
            return None
        keys = np.asarray(graph.keys, np.int64)
        stale = keys[~np.isin(keys, self.chunk_ids)]
        missing = ~np.isin(self.chunk_ids, keys)
        if len(stale):
            graph.remove(stale)
        if missing.any():
            graph.add(self.chunk_ids[missing], self.matrix[missing])  # type: ignore[index]
        self.unsaved_changes += len(stale) + int(missing.sum())
        return graph

    def _save(self) -> None:
        self.saved_at = time.monotonic()
        if self.saved is not None and self.hnsw is not None:
            self.saved.save(self.hnsw)
        self.unsaved_changes = 0

    def search(
        self, query: np.ndarray, k: int, allowed_files: set[str] | None = None
    ) -> list[tuple[int, float]]:
        """(chunk id, cosine) of the `k` nearest rows, best first, among rows of `allowed_files`."""
        if not len(self.chunk_ids) or k <= 0:
            return []
        mask = None if allowed_files is None else np.isin(self.file_ids, list(allowed_files))
        if self.hnsw is not None and (mask is None or mask.mean() > 0.2):
            found = self._search_hnsw(query, k, allowed_files)
            if len(found) >= min(k, int(mask.sum()) if mask is not None else k):
                return found
        return self._search_exact(query, k, mask)

    def _search_exact(self, query: np.ndarray, k: int, mask: np.ndarray | None) -> list[tuple[int, float]]:
        assert self.matrix is not None
        positions = np.arange(len(self.chunk_ids)) if mask is None else np.flatnonzero(mask)
        if not len(positions):
            return []
        # One BLAS thread: a multi-threaded gemv of one query waits on workers that the kernel's decode
        # keeps busy (p50 40 ms instead of 1.5 ms at 10k rows on this busy 2-core machine).
        with _blas.limit(limits=1, user_api="blas"):
            scores = self.matrix @ query if mask is None else self.matrix[positions] @ query
        k = min(k, len(positions))
        top = np.argpartition(-scores, k - 1)[:k]
        top = top[np.argsort(-scores[top])]
        return [(int(self.chunk_ids[positions[i]]), float(scores[i])) for i in top]

    def _search_hnsw(
        self, query: np.ndarray, k: int, allowed_files: set[str] | None
    ) -> list[tuple[int, float]]:
        wanted = min(len(self.chunk_ids), k if allowed_files is None else k * OVERSAMPLE)
        matches = self.hnsw.search(query, wanted)  # type: ignore[union-attr]
        positions = np.searchsorted(self.chunk_ids, matches.keys)
        found = []
        for key, position, distance in zip(matches.keys, positions, matches.distances, strict=True):
            if allowed_files is None or self.file_ids[position] in allowed_files:
                found.append((int(key), 1.0 - float(distance)))
            if len(found) == k:
                break
        return found


@dataclass(frozen=True)
class SavedGraph:
    """Where one store's HNSW graph for one embedding model is kept between runs."""

    folder: Path
    store_id: str
    model: str
    #: The app's `seal_bytes`/`open_bytes`: the graph holds every vector (as f16), so it is kept on
    #: disk sealed under the app's data key like the rest of its data (None: kept as usearch writes it).
    seal: Callable[[bytes, str], bytes] | None = field(default=None, compare=False)
    unseal: Callable[[bytes, str], bytes] | None = field(default=None, compare=False)

    @property
    def path(self) -> Path:
        return self.folder / f"{self.store_id}.{self._digest}.usearch"

    @property
    def purpose(self) -> str:
        """What a sealed graph is bound to: it does not open as another store's or model's graph."""
        return f"vector-index:{self.store_id}:{self._digest}"

    @property
    def _digest(self) -> str:
        return hashlib.sha256(self.model.encode()).hexdigest()[:16]

    def load(self, dim: int):
        """The saved graph, or None when there is none (or it cannot be read: it is rebuilt). A graph
        saved unsealed (before graphs were sealed) is sealed again at once."""
        from usearch.index import Index

        if not self.path.exists():
            return None
        try:
            stored = self.path.read_bytes()
            plain = stored if self.unseal is None else self.unseal(stored, self.purpose)
            graph = Index.restore(plain, expansion_search=HNSW_EXPANSION_SEARCH)
        except Exception:  # a torn, tampered or foreign file: the rows are the truth, build again
            logger.warning("the saved vector index %s cannot be read; rebuilding it", self.path.name)
            return None
        if graph is None or graph.ndim != dim:
            return None
        if self.seal is not None and plain == stored:
            self.save(graph)
        return graph

    def save(self, graph) -> None:
        """Write the graph, sealed where the store's app seals its data (to a temporary file renamed
        over the old one, so a kill leaves either), and remove this store's graphs of other models."""
        plain = bytes(graph.save())
        stored = plain if self.seal is None else self.seal(plain, self.purpose)
        self.folder.mkdir(mode=0o700, parents=True, exist_ok=True)
        partial = self.path.with_suffix(".partial")
        with open_private(partial) as f:
            f.write(stored)
        os.replace(partial, self.path)
        remove_saved_graphs(self.folder, self.store_id, keep=self.path)


def remove_saved_graphs(folder: Path, store_id: str, keep: Path | None = None) -> None:
    """Delete a store's saved graphs (all of them, or all but `keep`)."""
    for path in folder.glob(f"{store_id}.*.usearch") if folder.exists() else ():
        if path != keep:
            path.unlink(missing_ok=True)


def _new_hnsw(dim: int):
    from usearch.index import Index

    return Index(
        ndim=dim,
        metric="ip",  # rows are unit length: inner product is cosine
        dtype="f16",
        connectivity=HNSW_CONNECTIVITY,
        expansion_add=HNSW_EXPANSION_ADD,
        expansion_search=HNSW_EXPANSION_SEARCH,
    )


class IndexCache:
    """The index of each (app, store), shared by the threads of one process; one refresh at a time
    per process (a refresh reads only the rows that changed)."""

    def __init__(self) -> None:
        self.lock = threading.Lock()
        self._indexes: dict[tuple[str, str], VectorIndex] = {}

    def get(self, key: tuple[str, str]) -> VectorIndex:
        index = self._indexes.get(key)
        if index is None:
            index = self._indexes[key] = VectorIndex()
        return index

    def discard(self, key: tuple[str, str]) -> None:
        """Forget one store's index (its vectors were rewritten in place: re-indexed)."""
        with self.lock:
            self._indexes.pop(key, None)

    def drop(self, owner: str) -> None:
        """Forget every index of one app (its data was deleted)."""
        with self.lock:
            for key in [k for k in self._indexes if k[0] == owner]:
                del self._indexes[key]
