"""Retrieval on LoCoMo (../shared/data/locomo-dev): each conversation's turns ingested as one vector
store through llmasos.data (one JSON-lines item per turn with its dia_id, speaker and session date),
then for every question of categories 1-4 the recall@5 and @10 of its evidence turns, for our BM25
(FTS5), our vectors, and our fused ranking, beside two plain baselines run on the same turns in the
same run: `bm25s` (BM25 over the same text) and exact numpy cosine over the same embeddings.
`--speed` adds ingestion chunks/s and search p50/p95 at 10k and 100k chunks (synthetic vectors).

    python benchmarks/retrieval_locomo.py [--data ../shared/data/locomo-dev] [--speed]
"""

from __future__ import annotations

import argparse
import json
import os
import random
import re
import statistics
import sys
import tempfile
import time
from collections import defaultdict
from pathlib import Path

import numpy as np

REPO = Path(__file__).resolve().parent.parent
#: ../shared/data/locomo-dev beside the checkout (or beside the folder of worktrees holding it).
DEFAULT_DATA = next(
    (
        p / "shared" / "data" / "locomo-dev"
        for p in (REPO.parent, REPO.parent.parent)
        if (p / "shared").is_dir()
    ),
    REPO.parent / "shared" / "data" / "locomo-dev",
)
CATEGORIES = {1: "multi-hop", 2: "temporal", 3: "open-domain", 4: "single-hop"}
KS = (5, 10)
METHODS = ("bm25s", "numpy-cosine", "ours-bm25", "ours-vector", "ours-rrf60", "ours-fused")
#: Our retrievals: (mode, fusion) per method. ours-fused is the default (convex combination of
#: min-max scaled scores); ours-rrf60 is the reciprocal rank fusion it replaced, on the same candidates.
OURS = {
    "ours-bm25": ("bm25", "convex"),
    "ours-vector": ("vector", "convex"),
    "ours-rrf60": ("hybrid", "rrf"),
    "ours-fused": ("hybrid", "convex"),
}


def turns_of(conversation: dict) -> list[dict]:
    """Every turn as a JSON-lines item: its text (with a shared photo's caption), speaker, date."""
    items = []
    sessions = sorted(
        (int(m.group(1)), key) for key in conversation if (m := re.fullmatch(r"session_(\d+)", key))
    )
    for number, key in sessions:
        date = conversation.get(f"session_{number}_date_time", "")
        for turn in conversation[key]:
            text = turn["text"]
            if turn.get("blip_caption"):
                text += f" [shares a photo: {turn['blip_caption']}]"
            items.append({"text": text, "speaker": turn["speaker"], "date": date, "dia_id": turn["dia_id"]})
    return items


def evidence_of(question: dict) -> set[str]:
    return {e.strip() for raw in question.get("evidence", []) for e in re.split(r"[;,]", raw) if e.strip()}


def recall(ranked: list[str], evidence: set[str], k: int) -> float:
    return len(evidence & set(ranked[:k])) / len(evidence)


def ingest(items: list[dict], name: str, embedder):
    from llmasos.data.app_data import app_data
    from llmasos.data.files import create_file
    from llmasos.data.ingest import ingest_file
    from llmasos.data.vector_stores import attach_files, create_store

    data = app_data(f"name:bench-{name}")
    content = "\n".join(json.dumps(item) for item in items).encode()
    file = create_file(data, f"{name}.jsonl", content)
    store = create_store(data, name, None)
    attach_files(data, store["id"], [file["id"]])
    started, started_cpu = time.perf_counter(), time.process_time()
    result = ingest_file(data, store["id"], file["id"], embedder)
    seconds, cpu_seconds = time.perf_counter() - started, time.process_time() - started_cpu
    assert result.status == "completed", result
    return data, store["id"], result.chunks, (seconds, cpu_seconds)


def evaluate(path: Path, embedder, per_category: dict, totals: dict) -> tuple[int, tuple[float, float]]:
    import bm25s

    from llmasos.data.search import SearchOptions, search

    record = json.loads(path.read_text())
    conversation = record.get("conversation", record)
    questions = [q for q in record["qa"] if q.get("category") in CATEGORIES and evidence_of(q)]
    items = turns_of(conversation)
    data, store_id, chunks, seconds = ingest(items, path.stem, embedder)
    rows = data.db.execute(
        "SELECT id, search_text, meta, embedding FROM chunks WHERE store_id = ? ORDER BY id", (store_id,)
    )
    dia_of = {r["id"]: json.loads(r["meta"])["dia_id"] for r in rows}
    dia_ids = [dia_of[r["id"]] for r in rows]
    matrix = np.frombuffer(b"".join(bytes(r["embedding"]) for r in rows), np.float32).reshape(len(rows), -1)
    retriever = bm25s.BM25()
    retriever.index(
        bm25s.tokenize([r["search_text"] for r in rows], stopwords="en", show_progress=False),
        show_progress=False,
    )
    for question in questions:
        text, evidence = question["question"], evidence_of(question)
        query_vector = np.asarray(embedder.embed([text])[0][0], np.float32)
        ranked = {}
        ids, _ = retriever.retrieve(
            bm25s.tokenize([text], stopwords="en", show_progress=False), k=10, show_progress=False
        )
        ranked["bm25s"] = [dia_ids[i] for i in ids[0]]
        ranked["numpy-cosine"] = [dia_ids[i] for i in np.argsort(-(matrix @ query_vector))[:10]]
        for method, (mode, fusion) in OURS.items():
            options = SearchOptions(max_results=10, mode=mode, fusion=fusion)
            hits = search(data, store_id, text, query_vector, options)
            ranked[method] = [h.meta["dia_id"] for h in hits]
        for method, order in ranked.items():
            for k in KS:
                score = recall(order, evidence, k)
                per_category[(question["category"], method, k)].append(score)
                totals[(method, k)].append(score)
    return chunks, seconds


def print_recall(per_category: dict, totals: dict) -> None:
    header = f"{'category':<14}{'n':>5}  " + "".join(f"{m:>14}" for m in METHODS)
    for k in KS:
        print(f"\nrecall@{k}")
        print(header)
        for category, label in CATEGORIES.items():
            n = len(per_category[(category, METHODS[0], k)])
            cells = "".join(
                f"{100 * statistics.mean(per_category[(category, m, k)]):>14.1f}" for m in METHODS
            )
            print(f"{f'{category} {label}':<14}{n:>5}  {cells}")
        n = len(totals[(METHODS[0], k)])
        print(
            f"{'all 1-4':<14}{n:>5}  "
            + "".join(f"{100 * statistics.mean(totals[(m, k)]):>14.1f}" for m in METHODS)
        )
    fused = 100 * statistics.mean(totals[("ours-fused", 10)])
    best_single = max(100 * statistics.mean(totals[(m, 10)]) for m in ("ours-bm25", "ours-vector"))
    print(
        f"\nfused recall@10 {fused:.1f} vs best single retriever {best_single:.1f}: "
        f"{fused - best_single:+.1f} points (goal +5)"
    )


# ---- speed at scale -------------------------------------------------------------------------------


def _clustered_vectors(rng: np.random.Generator, count: int, dim: int = 384) -> np.ndarray:
    """Unit vectors around 1,000 centres, as sentence embeddings cluster by topic (uniformly random
    vectors have no near neighbours at all: every other row sits at cosine ~0 of each)."""
    centres = rng.standard_normal((1000, dim))
    vectors = centres[rng.integers(0, len(centres), count)] + 0.7 * rng.standard_normal((count, dim))
    return (vectors / np.linalg.norm(vectors, axis=1, keepdims=True)).astype(np.float32)


def _synthetic_store(name: str, vectors: np.ndarray, words: list[str]):
    from llmasos.data.app_data import app_data
    from llmasos.data.ingest import as_blob
    from llmasos.data.vector_stores import create_store

    data = app_data(f"name:{name}")
    store_id = create_store(data, name, None)["id"]
    data.db.execute(
        "INSERT INTO files (id, filename, purpose, bytes, content, created_at) "
        "VALUES ('file-s', 's.txt', 'assistants', 1, x'00', 0)"
    )
    data.db.execute(
        "INSERT INTO store_files (store_id, file_id, status, attributes, chunking, created_at) "
        "VALUES (?, 'file-s', 'completed', '{}', '{}', 0)",
        (store_id,),
    )
    with data.db.transaction() as conn:
        conn.executemany(
            "INSERT INTO chunks (store_id, file_id, ordinal, text, search_text, start, end, heading, "
            "meta, embedding, model) "
            "VALUES (?, 'file-s', ?, ?, ?, 0, 0, '', '{}', ?, 'synthetic')",
            (
                (store_id, i, text, text, as_blob(vectors[i]))
                for i in range(len(vectors))
                for text in [" ".join(random.Random(i).choices(words, k=40))]
            ),
        )
        conn.execute("UPDATE vector_stores SET embedding_model = 'synthetic' WHERE id = ?", (store_id,))
    return data, store_id


#: BM25 as it was ranked before FTS5 ranked alone (every match joined, then sorted), timed beside the
#: current `bm25_ranking` (the baseline). CROSS JOIN, as the engine's queries: on SQLCipher's SQLite
#: 3.51 a plain JOIN runs the MATCH once per chunk (seconds a query), which would time the planner.
_FTS5_JOINED = (
    "SELECT c.id, -bm25(chunks_fts) AS score, c.file_id FROM chunks_fts "
    "CROSS JOIN chunks c ON c.id = chunks_fts.rowid WHERE chunks_fts MATCH ? AND c.store_id = ? "
    "ORDER BY bm25(chunks_fts) LIMIT ?"
)


def _search_parts(data, store_id: str, index, text: str, query_vector: np.ndarray) -> dict:
    """Each part of a search to time, as a call: the index, FTS5, then whole searches by mode."""
    from llmasos.data.search import SearchOptions, bm25_ranking, fts_query, search

    def whole(mode: str):
        return lambda: search(data, store_id, text, query_vector, SearchOptions(max_results=10, mode=mode))

    def fts5_joined():  # the ranking before FTS5 ranked alone: every match joined to chunks, then cut
        return data.db.execute(_FTS5_JOINED, (fts_query(text), store_id, 50))

    return {
        "index": lambda: index.search(query_vector, 50),
        # The current ranking first: it meets the query's words uncached, the baseline after it not.
        "fts5": lambda: bm25_ranking(data, store_id, text, 50, None),
        "fts5-joined": fts5_joined,
        **{mode: whole(mode) for mode in ("vector", "bm25", "hybrid")},
    }


def speed(scales: list[int], queries: int) -> None:
    """Search latency at each scale, split into its parts: the vector index alone (exact numpy up
    to 20k rows, HNSW past), FTS5's BM25 alone (and, as the baseline, the way it was ranked before:
    every match joined to its chunk before the cut), and whole searches (the rest is fusion, filters and
    SQL); the index's build and its restore from the saved graph; HNSW's recall@10 against exact.
    Wall time beside the CPU time this process spent: on a shared machine the difference is the
    time spent waiting for a core."""
    from llmasos.data.app_data import indexes
    from llmasos.data.search import vector_index

    rng = np.random.default_rng(0)
    words = [f"w{i}" for i in range(20_000)]
    for scale in scales:
        vectors = _clustered_vectors(rng, scale)
        data, store_id = _synthetic_store(f"speed-{scale}", vectors, words)
        started = time.perf_counter()
        vector_index(data, store_id)
        build = time.perf_counter() - started
        indexes.discard((data.owner, store_id))  # as a restarted server finds it
        started = time.perf_counter()
        index = vector_index(data, store_id)
        restore = time.perf_counter() - started
        parts = ("index", "fts5", "fts5-joined", "vector", "bm25", "hybrid")
        wall: dict[str, list[float]] = {part: [] for part in parts}
        cpu: dict[str, list[float]] = {part: [] for part in parts}
        agreement = []
        for q in range(queries):
            row = q * 7919 % scale
            query_vector = vectors[row] + 0.05 * rng.standard_normal(384).astype(np.float32)
            query_vector /= np.linalg.norm(query_vector)
            text = " ".join(random.Random(row).choices(words, k=40)[:6])
            for part, step in _search_parts(data, store_id, index, text, query_vector).items():
                started, started_cpu = time.perf_counter(), time.process_time()
                result = step()
                wall[part].append(time.perf_counter() - started)
                cpu[part].append(time.process_time() - started_cpu)
                if part == "index":
                    found = result
            exact = set(index.chunk_ids[np.argsort(-(index.matrix @ query_vector))[:10]].tolist())
            agreement.append(len(exact & {c for c, _ in found[:10]}) / 10)
        kind = "HNSW" if index.hnsw is not None else "exact"
        print(
            f"{scale:>7} chunks ({kind}): index built in {build:.1f} s, restored in {restore:.2f} s; "
            f"recall@10 against exact {np.mean(agreement):.3f}"
        )
        for part in parts:
            p50, p95 = (1e3 * np.percentile(wall[part], p) for p in (50, 95))
            c50, c95 = (1e3 * np.percentile(cpu[part], p) for p in (50, 95))
            print(
                f"{'':>9}{part:<12} wall p50 {p50:6.2f} p95 {p95:6.2f} ms;  "
                f"CPU (this process) p50 {c50:6.2f} p95 {c95:6.2f} ms"
            )


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument(
        "--data", type=Path, default=DEFAULT_DATA, help="the folder of LoCoMo conv-*.json files"
    )
    parser.add_argument("--speed", action="store_true", help="also measure search at 10k and 100k chunks")
    parser.add_argument("--speed-only", action="store_true", help="only the speed part")
    parser.add_argument("--scales", default="10000,100000")
    parser.add_argument("--queries", type=int, default=100)
    args = parser.parse_args()
    os.environ["LLMASOS_HOME"] = tempfile.mkdtemp(prefix="llmasos-bench-")
    sys.path.insert(0, str(REPO))
    from llmasos.tools.embed import load_embedder

    if args.speed_only:
        print(f"search speed (load average {os.getloadavg()[0]:.1f} on {os.cpu_count()} cores)")
        speed([int(s) for s in args.scales.split(",")], args.queries)
        return
    files = sorted(args.data.glob("conv-*.json"))
    if not files:
        raise SystemExit(f"no conv-*.json under {args.data}; pass --data")
    embedder = load_embedder()
    per_category, totals = defaultdict(list), defaultdict(list)
    chunks = seconds = cpu_seconds = 0.0
    for path in files:
        n, (s, c) = evaluate(path, embedder, per_category, totals)
        chunks, seconds, cpu_seconds = chunks + n, seconds + s, cpu_seconds + c
    print(f"LoCoMo dev: {len(files)} conversations, {int(chunks)} turns; embedder {embedder.name}")
    print(
        f"ingestion (read, chunk, embed, write): {chunks / seconds:.0f} chunks/s "
        f"({chunks / cpu_seconds:.0f} per CPU-second of this process; load average {os.getloadavg()[0]:.1f})"
    )
    print_recall(per_category, totals)
    if args.speed:
        print(f"\nsearch speed (load average {os.getloadavg()[0]:.1f} on {os.cpu_count()} cores)")
        speed([int(s) for s in args.scales.split(",")], args.queries)


if __name__ == "__main__":
    main()
