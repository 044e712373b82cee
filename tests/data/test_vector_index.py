"""The vector index past its exact-search size: HNSW (usearch) answers as exact search does on
clustered vectors, its graph is saved and restored by a new process's index instead of being built
again (rows added and removed meanwhile are applied), and a graph of another embedding model is
never used."""

from __future__ import annotations

import stat
from pathlib import Path

import numpy as np
import pytest

from llmasos.data import index as index_module
from llmasos.data.app_data import app_data, index_folder
from llmasos.data.index import SavedGraph, VectorIndex
from llmasos.data.vector_stores import create_store, delete_store

DIM, ROWS, CLUSTERS = 32, 3000, 30


def _unit(rows: np.ndarray) -> np.ndarray:
    return (rows / np.linalg.norm(rows, axis=1, keepdims=True)).astype(np.float32)


@pytest.fixture
def vectors() -> np.ndarray:
    rng = np.random.default_rng(7)
    centres = rng.standard_normal((CLUSTERS, DIM))
    return _unit(centres[rng.integers(0, CLUSTERS, ROWS)] + 0.3 * rng.standard_normal((ROWS, DIM)))


@pytest.fixture(autouse=True)
def small_exact_limit(monkeypatch) -> None:
    monkeypatch.setattr(index_module, "EXACT_MAX_ROWS", 500)  # HNSW from 500 rows, not 20,000
    monkeypatch.setattr(index_module, "SAVE_EVERY_S", 0.0)  # save after every change


def _rows(ids: np.ndarray, vectors: np.ndarray) -> list[tuple[int, str, bytes]]:
    return [(int(i), "file-a", vectors[i - 1].tobytes()) for i in ids]


def _exact_top(vectors: np.ndarray, ids: np.ndarray, query: np.ndarray, k: int) -> set[int]:
    scores = vectors[ids - 1] @ query
    return {int(ids[i]) for i in np.argsort(-scores)[:k]}


def _recall(index: VectorIndex, vectors: np.ndarray, ids: np.ndarray, queries: np.ndarray) -> float:
    found = [
        len({c for c, _ in index._search_hnsw(q, 10, None)} & _exact_top(vectors, ids, q, 10)) / 10
        for q in queries
    ]
    return float(np.mean(found))


def test_hnsw_agrees_with_exact_search_and_is_restored_not_rebuilt(
    tmp_path: Path, vectors: np.ndarray, monkeypatch
) -> None:
    ids = np.arange(1, ROWS + 1 - 500)  # chunk ids start at 1; the last 500 come later
    queries = _unit(vectors[::97] + 0.05)
    saved = SavedGraph(tmp_path, "vs_a", "model-one")
    first = VectorIndex(saved=saved)
    first.update(ids, _rows(ids, vectors))
    assert first.hnsw is not None and _recall(first, vectors, ids, queries) >= 0.95
    assert stat.S_IMODE(saved.path.stat().st_mode) == 0o600

    def no_build(dim: int):
        raise AssertionError("the saved graph should have been restored, not built again")

    monkeypatch.setattr(index_module, "_new_hnsw", no_build)
    later = np.concatenate([ids[100:], np.arange(ROWS + 1 - 500, ROWS + 1)])  # 100 deleted, 500 added
    restarted = VectorIndex(saved=saved)
    restarted.update(later, _rows(later, vectors))
    assert len(restarted.hnsw) == len(later)
    assert _recall(restarted, vectors, later, queries) >= 0.95
    deleted = {int(i) for i in ids[:100]}
    assert not any(c in deleted for q in queries for c, _ in restarted.search(q, 10))
    newest = vectors[ROWS - 1]
    assert restarted.search(newest, 1)[0][0] == ROWS


def test_a_graph_of_another_embedding_model_is_not_used(tmp_path: Path, vectors: np.ndarray) -> None:
    ids = np.arange(1, 1001)
    old = SavedGraph(tmp_path, "vs_a", "model-one")
    VectorIndex(saved=old).update(ids, _rows(ids, vectors))
    assert old.path.exists()
    new = SavedGraph(tmp_path, "vs_a", "model-two")
    assert new.load(DIM) is None
    VectorIndex(saved=new).update(ids, _rows(ids, vectors))
    assert new.path.exists() and not old.path.exists()  # the stale graph is removed


def test_deleting_a_store_deletes_its_saved_graph(vectors: np.ndarray) -> None:
    data = app_data("name:graphs")
    store_id = create_store(data, "s", None)["id"]
    saved = SavedGraph(index_folder(data.owner), store_id, "model-one")
    ids = np.arange(1, 1001)
    VectorIndex(saved=saved).update(ids, _rows(ids, vectors))
    assert saved.path.exists() and stat.S_IMODE(saved.path.parent.stat().st_mode) == 0o700
    delete_store(data, store_id)
    assert not saved.path.exists()


def test_the_saved_graph_is_sealed_under_the_apps_key_and_restored_from_it(
    vectors: np.ndarray, monkeypatch
) -> None:
    data = app_data("name:graphs")
    store_id = create_store(data, "s", None)["id"]
    sealed = SavedGraph(index_folder(data.owner), store_id, "model-one", data.seal_bytes, data.open_bytes)
    ids = np.arange(1, 1001)
    VectorIndex(saved=sealed).update(ids, _rows(ids, vectors))
    stored = sealed.path.read_bytes()
    assert vectors[0].astype(np.float16).tobytes() not in stored  # the graph keeps f16 rows
    assert SavedGraph(sealed.folder, store_id, "model-one").load(DIM) is None  # unusable unsealed

    def no_build(dim: int):
        raise AssertionError("the sealed graph should have been restored, not built again")

    with monkeypatch.context() as patch:
        patch.setattr(index_module, "_new_hnsw", no_build)
        restored = VectorIndex(saved=sealed)
        restored.update(ids, _rows(ids, vectors))
        assert restored.search(vectors[41], 1)[0][0] == 42

    damaged = bytearray(stored)
    damaged[len(damaged) // 2] ^= 1
    sealed.path.write_bytes(bytes(damaged))
    assert sealed.load(DIM) is None  # failed authentication: rebuilt from the rows, never used

    plain = SavedGraph(sealed.folder, store_id, "model-one")  # a graph saved before sealing...
    VectorIndex(saved=plain).update(ids, _rows(ids, vectors))
    assert vectors[0].astype(np.float16).tobytes() in sealed.path.read_bytes()
    assert sealed.load(DIM) is not None  # ...is used, and sealed at once
    assert vectors[0].astype(np.float16).tobytes() not in sealed.path.read_bytes()
