"""The vector index of one vector store: exact cosine (numpy) while it is small, HNSW graph search
(usearch) past `EXACT_MAX_ROWS`, both kept in step with the store's rows in SQLite incrementally.

Why these two, measured here (2 cores shared with seven other engineers' work, load average 12-20):
exact search of one query over 100k 384-dimensional rows took p50 62 / p95 78 ms with numpy f32 and
42 / 94 ms with usearch's exact int8 kernel, while usearch's HNSW answered a 10k-row index in p50
0.8 ms; at 10k rows numpy on one BLAS thread takes p50 1.5 ms, exactly. sqlite-vec is brute force
only (no faster than numpy), and hnswlib would compile from source here, while usearch ships wheels
and keeps vectors as f16. The cost is HNSW's build: 100k rows took 24 minutes on this loaded
machine (the first search after a bulk load pays it; later changes add or remove only their rows).
`benchmarks/retrieval_locomo.py --speed-only` measures search at 10k and 100k chunks again.
The rows stay the truth; an index is a cache of them.
"""

from __future__ import annotations

import threading
from dataclasses import dataclass, field

import numpy as np
from threadpoolctl import ThreadpoolController

_blas = ThreadpoolController()

EXACT_MAX_ROWS = 20_000
#: Extra candidates asked of HNSW when a filter will drop some.
OVERSAMPLE = 4
HNSW_CONNECTIVITY = 16
HNSW_EXPANSION_ADD = 128
HNSW_EXPANSION_SEARCH = 128


@dataclass
class VectorIndex:
    chunk_ids: np.ndarray = field(default_factory=lambda: np.zeros(0, np.int64))  # ascending
    file_ids: np.ndarray = field(default_factory=lambda: np.zeros(0, object))
    matrix: np.ndarray | None = None  # (N, dim) float32 unit rows, in chunk_ids order
    hnsw: object | None = None  # usearch Index keyed by chunk id, once past EXACT_MAX_ROWS
    version: int = -1  # the store's chunks_version these rows reflect

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
        if self.hnsw is None and len(self.chunk_ids) > EXACT_MAX_ROWS:
            self.hnsw = _new_hnsw(self.matrix.shape[1])  # type: ignore[union-attr]
            self.hnsw.add(self.chunk_ids, self.matrix)  # type: ignore[attr-defined]

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
