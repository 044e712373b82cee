"""An app's documents with its database plain SQLite and SQLCipher (what LLMasOS does now), measured
in the same run on the same synthetic chunks through the real storage path (issue 27: documents
encrypted at rest): writing chunks (rows + FTS5 triggers, as ingestion commits them; embedding is
not counted: it is the same either way and dominates real ingestion), search p50/p95 for FTS5 alone
and whole bm25/vector/hybrid searches, the vector index's first load from the rows, and restoring a
saved HNSW graph plain vs sealed under the app's data key, and the one-time conversion of the plain
database (`sqlcipher_export`).

    PYTHONPATH=. .venv/bin/python benchmarks/encrypted_app_db.py [--scales 10000,100000] \
        [--queries 200] [--graph-rows 20000] [--exact]

Each scale runs plain then encrypted in a fresh $LLMASOS_HOME; the chunks and queries are the same
(seeded). Search times are wall time, and (`<part> CPU`) this process's CPU time, which a shared
machine disturbs less; run it under the bench lock.
"""

from __future__ import annotations

import argparse
import os
import random
import sys
import tempfile
import time
from pathlib import Path

import numpy as np

REPO = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(REPO))
sys.path.insert(0, str(REPO / "benchmarks"))


def _use_plain_databases(plain: bool) -> None:
    """Plain: the app database opened without a key, and graphs saved unsealed (as before)."""
    from llmasos.data import app_data, index, schema, search
    from llmasos.storage.db import Database

    if plain:
        app_data.open_database = lambda owner, key: Database(schema.database_path(owner), schema.MIGRATIONS)
        search.SavedGraph = lambda folder, store_id, model, *sealing: index.SavedGraph(
            folder, store_id, model
        )
    else:
        app_data.open_database = schema.open_database
        search.SavedGraph = index.SavedGraph


def _percentiles(samples: list[float]) -> str:
    p50, p95 = (1e3 * np.percentile(samples, p) for p in (50, 95))
    return f"p50 {p50:6.2f} p95 {p95:6.2f} ms"


def run_scale(scale: int, queries: int, encrypted: bool) -> dict[str, object]:
    from retrieval_locomo import _clustered_vectors, _search_parts, _synthetic_store

    from llmasos.data.app_data import app_data, close_app_data, indexes
    from llmasos.data.schema import database_path
    from llmasos.data.search import vector_index
    from llmasos.security.data_keys import data_keys
    from llmasos.storage import encrypted_db

    os.environ["LLMASOS_HOME"] = tempfile.mkdtemp(prefix="llmasos-bench-")
    _use_plain_databases(not encrypted)
    rng = np.random.default_rng(0)
    words = [f"w{i}" for i in range(20_000)]
    vectors = _clustered_vectors(rng, scale)
    started = time.perf_counter()
    data, store_id = _synthetic_store(f"enc-{scale}", vectors, words)
    write = time.perf_counter() - started
    close_app_data(data.owner)  # as a restarted server finds it: nothing in SQLite's page cache
    data = app_data(data.owner)
    indexes.discard((data.owner, store_id))
    started = time.perf_counter()
    index = vector_index(data, store_id)
    load = time.perf_counter() - started
    timings: dict[str, list[float]] = {}
    for q in range(queries):
        row = q * 7919 % scale
        query_vector = vectors[row] + 0.05 * rng.standard_normal(384).astype(np.float32)
        query_vector /= np.linalg.norm(query_vector)
        text = " ".join(random.Random(row).choices(words, k=40)[:6])
        for part, step in _search_parts(data, store_id, index, text, query_vector).items():
            started, started_cpu = time.perf_counter(), time.process_time()
            step()
            timings.setdefault(part, []).append(time.perf_counter() - started)
            timings.setdefault(f"{part} CPU", []).append(time.process_time() - started_cpu)
    path = database_path(data.owner)
    size = sum(p.stat().st_size for p in path.parent.glob("data.db*"))
    convert = None
    if not encrypted:  # the one-time conversion of this plaintext database on a first open
        close_app_data(data.owner)
        started = time.perf_counter()
        assert encrypted_db.encrypt_in_place(path, data_keys().database_key(data.owner))
        convert = time.perf_counter() - started
    return {"write": write, "load": load, "timings": timings, "size": size, "convert": convert}


def graph_restore(rows: int) -> None:
    """Restore of one saved graph of `rows` 384-d vectors, saved plain and sealed (the same graph)."""
    from retrieval_locomo import _clustered_vectors

    from llmasos.data import index as index_module
    from llmasos.data.app_data import app_data, index_folder

    os.environ["LLMASOS_HOME"] = tempfile.mkdtemp(prefix="llmasos-bench-")
    data = app_data("name:graph")
    vectors = _clustered_vectors(np.random.default_rng(1), rows)
    started = time.perf_counter()
    graph = index_module._new_hnsw(vectors.shape[1])
    graph.add(np.arange(1, rows + 1), vectors)
    print(f"graph of {rows} rows built in {time.perf_counter() - started:.1f} s")
    folder = index_folder(data.owner)
    for name, saved in (
        ("plain", index_module.SavedGraph(folder, "plain", "m")),
        ("sealed", index_module.SavedGraph(folder, "sealed", "m", data.seal_bytes, data.open_bytes)),
    ):
        started = time.perf_counter()
        saved.save(graph)
        save = time.perf_counter() - started
        loads = []
        for _ in range(5):
            started = time.perf_counter()
            assert saved.load(vectors.shape[1]) is not None
            loads.append(time.perf_counter() - started)
        print(
            f"  {name:<7} graph file {saved.path.stat().st_size / 2**20:6.1f} MiB: saved in {save:.2f} s, "
            f"restored in median {np.median(loads):.3f} s (of 5)"
        )


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--scales", default="10000,100000")
    parser.add_argument("--queries", type=int, default=200)
    parser.add_argument("--graph-rows", type=int, default=20_000, help="0: skip the graph restore")
    parser.add_argument(
        "--exact", action="store_true", help="exact vector search at every scale (no HNSW build at 100k)"
    )
    args = parser.parse_args()
    if args.exact:
        from llmasos.data import index

        index.EXACT_MAX_ROWS = 10**9
    print(f"load average {os.getloadavg()[0]:.1f} on {os.cpu_count()} cores")
    for scale in (int(s) for s in args.scales.split(",")):
        results = {
            mode: run_scale(scale, args.queries, mode == "sqlcipher") for mode in ("plain", "sqlcipher")
        }
        print(f"{scale} chunks")
        for mode, r in results.items():
            print(
                f"  {mode:<9} write {scale / r['write']:7.0f} chunks/s; vector index loaded from the rows in "
                f"{r['load']:.2f} s; files {r['size'] / 2**20:.1f} MiB"
            )
        print(f"  converting the plain database to SQLCipher took {results['plain']['convert']:.2f} s")
        for part in results["plain"]["timings"]:
            line = "  ".join(f"{mode} {_percentiles(r['timings'][part])}" for mode, r in results.items())
            print(f"    {part:<11} {line}")
    if args.graph_rows:
        graph_restore(args.graph_rows)
    print(f"load average {os.getloadavg()[0]:.1f}")


if __name__ == "__main__":
    main()
