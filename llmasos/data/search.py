"""Hybrid search over one vector store: BM25 (SQLite FTS5) and vectors (index.py), fused by a convex
combination of their normalized scores, restricted to the files whose attributes pass a filter.

Fusion (`fusion="convex"`, the default): each retriever's scores over its own candidates are scaled
to [0, 1] (min-max), and a chunk's fused score is the weighted mean of its scaled scores (0 where a
retriever did not return it). Bruch et al. (2023, "An analysis of fusion functions for hybrid
retrieval") found this beats reciprocal rank fusion, which it replaced here on LoCoMo (dev split,
`benchmarks/retrieval_locomo.py`): recall@10 fused 64.2 with RRF (k=60), +0.1 over BM25 alone,
against 70.6 (+6.5) with the convex combination at equal, untuned weights. RRF's `1 / (60 + rank)`
over 50-deep lists barely separates rank 1 from rank 10 (1/61 against 1/70), so a chunk both
retrievers put in their middle outranks one that either puts first, which is where the evidence of
a question mostly is; scaled scores keep how far ahead a first result is. `fusion="rrf"` keeps the
old ranking. Only chunks of completed files exist in the table, so a file being ingested is never
found.
"""

from __future__ import annotations

import json
import re
from dataclasses import dataclass, field

import numpy as np

from llmasos.data.app_data import AppData, index_folder, indexes
from llmasos.data.filters import compile_filter
from llmasos.data.index import SavedGraph, VectorIndex
from llmasos.errors import InvalidRequestError

RRF_K = 60
FUSIONS = ("convex", "rrf")
#: Candidates taken from each retriever before fusing, per result asked for (at least 50).
CANDIDATES_PER_RESULT = 5
MAX_RESULTS = 50
#: Rows FTS5 ranks on its own, per result asked for, before they are joined to their store and file.
FTS_FIRST_DEPTH = 2
MODES = ("hybrid", "bm25", "vector")

# Words that carry no topic: a question's "what did ... do" would otherwise match every chunk that
# says "did" (FTS5 keeps every token; BM25's idf only dampens them).
STOPWORDS = frozenset(
    """
    a about above after again all am an and any are as at be because been before being below between
    both but by can could did do does doing down during each few for from further had has have having he
    her here hers herself him himself his how i if in into is it its itself just me more most my myself
    no nor not now of off on once only or other our ours out over own same she should so some such than
    that the their theirs them then there these they this those through to too under until up very was
    we were what when where which while who whom why will with would you your yours
    """.split()  # noqa: SIM905 (a list of 120 words would take 120 lines)
)
_WORD = re.compile(r"\w+")


@dataclass(frozen=True)
class SearchOptions:
    max_results: int = 10
    mode: str = "hybrid"
    bm25_weight: float = 1.0
    vector_weight: float = 1.0
    score_threshold: float = 0.0  # OpenAI's ranking_options.score_threshold, on the returned score
    filters: dict | None = None
    explain: bool = False
    fusion: str = "convex"  # how hybrid mode merges the rankings: one of FUSIONS

    def __post_init__(self) -> None:
        if not isinstance(self.max_results, int) or not 1 <= self.max_results <= MAX_RESULTS:
            raise InvalidRequestError(f"max_num_results must be an integer from 1 to {MAX_RESULTS}")
        if self.mode not in MODES:
            raise InvalidRequestError(f"mode must be one of {', '.join(MODES)}")
        if self.fusion not in FUSIONS:
            raise InvalidRequestError(f"fusion must be one of {', '.join(FUSIONS)}")
        for name in ("bm25_weight", "vector_weight"):
            value = getattr(self, name)
            if isinstance(value, bool) or not isinstance(value, int | float) or value < 0:
                raise InvalidRequestError(f"{name} must be a number >= 0")


@dataclass
class Hit:
    chunk_id: int
    score: float
    file_id: str = ""
    filename: str = ""
    text: str = ""
    start: int = 0
    end: int = 0
    ordinal: int = 0
    heading: str = ""
    meta: dict = field(default_factory=dict)
    attributes: dict = field(default_factory=dict)
    explain: dict = field(default_factory=dict)

    def cited(self, explain: bool = False) -> dict:
        """The result with its citation: file, chunk, and the character span in the file's text."""
        out = {
            "file_id": self.file_id,
            "filename": self.filename,
            "chunk": self.ordinal,
            "span": [self.start, self.end],
            "heading": self.heading,
            "score": round(self.score, 6),
            "text": self.text,
            "metadata": self.meta,
            "attributes": self.attributes,
        }
        if explain:
            out["explain"] = self.explain
        return out


def fts_query(query: str) -> str:
    """An FTS5 MATCH expression: the query's content words, quoted, any of them (OR)."""
    words = [w for w in _WORD.findall(query.lower()) if w not in STOPWORDS]
    if not words:  # a query of stopwords only: search them rather than nothing
        words = _WORD.findall(query.lower())
    return " OR ".join(f'"{w}"' for w in dict.fromkeys(words))


def bm25_ranking(
    data: AppData, store_id: str, query: str, limit: int, files: set[str] | None
) -> list[tuple[int, float]]:
    """(chunk id, BM25 score) of the store's `limit` best matches of `query`, best first (ties by
    chunk id), among chunks of `files` (None: all).

    FTS5 ranks first, on its own: its best `limit * FTS_FIRST_DEPTH` rows are taken inside the FTS
    query and only they are joined to `chunks` to learn their store and file. Joining every match
    before ranking cost a row lookup per match (most of a search's time at 100k chunks). The index
    spans the app's stores, and a filter drops files, so when fewer than `limit` of those rows
    belong here the ranking is done again over every match, restricted in SQL before the cut: the
    result is the same either way (the first rows of an ordered list, filtered, are the first rows
    of the filtered list)."""
    expression = fts_query(query)
    if not expression or limit <= 0:
        return []
    depth = limit * FTS_FIRST_DEPTH
    rows = data.db.execute(_FTS_TOP_ROWS, (expression, depth))
    ranked = [(r[0], float(r[1])) for r in rows if r[2] == store_id and (files is None or r[3] in files)]
    if len(ranked) >= limit or len(rows) < depth:
        return ranked[:limit]
    allowed = None if files is None else json.dumps(sorted(files))
    rows = data.db.execute(_FTS_STORE_ROWS, (expression, store_id, allowed, allowed, limit))
    return [(r[0], float(r[1])) for r in rows]


# CROSS JOIN keeps FTS5 (or its ranked rows) the outer loop: SQLCipher's SQLite 3.51 otherwise may
# plan the store's chunks first and run the MATCH once per chunk (2,000 chunks: 1.9 s a query, not 1 ms).
#: The FTS index's best `?` matches of `?` (no join while ranking), then their store and file.
_FTS_TOP_ROWS = (
    "SELECT top.id, top.score, c.store_id, c.file_id FROM ("
    "SELECT rowid AS id, -bm25(chunks_fts) AS score FROM chunks_fts WHERE chunks_fts MATCH ? "
    "ORDER BY bm25(chunks_fts), rowid LIMIT ?) AS top CROSS JOIN chunks c ON c.id = top.id "
    "ORDER BY top.score DESC, top.id"
)
#: Every match of `?` in store `?` (of the files in the JSON list `?`, or any when it is NULL).
_FTS_STORE_ROWS = (
    "SELECT c.id, -bm25(chunks_fts) AS score FROM chunks_fts CROSS JOIN chunks c "
    "ON c.id = chunks_fts.rowid "
    "WHERE chunks_fts MATCH ? AND c.store_id = ? "
    "AND (? IS NULL OR c.file_id IN (SELECT value FROM json_each(?))) "
    "ORDER BY bm25(chunks_fts), c.id LIMIT ?"
)


def vector_index(data: AppData, store_id: str) -> VectorIndex:
    """The store's index, brought up to date with its rows when they changed (only the changed
    rows are read; whether any did is one row: the store's `chunks_version`)."""
    with indexes.lock:
        index = indexes.get((data.owner, store_id))
        row = data.db.execute(
            "SELECT chunks_version, embedding_model FROM vector_stores WHERE id = ?", (store_id,)
        )
        version, model = (row[0][0], row[0][1]) if row else (-1, None)
        if version != index.version:
            if model is not None:
                index.saved = SavedGraph(
                    index_folder(data.owner), store_id, model, data.seal_bytes, data.open_bytes
                )
            ids = data.db.execute("SELECT id FROM chunks WHERE store_id = ? ORDER BY id", (store_id,))
            rows = data.db.execute(
                "SELECT id, file_id, embedding FROM chunks WHERE store_id = ? AND id > ? ORDER BY id",
                (store_id, index.max_id),
            )
            index.update(np.asarray([r[0] for r in ids], np.int64), [(r[0], r[1], bytes(r[2])) for r in rows])
            index.version = version
        return index


def allowed_files(data: AppData, store_id: str, filters: dict | None) -> set[str] | None:
    """The completed files of the store whose attributes pass `filters`; None (all) without one,
    read without a query: an unfiltered search reads only its hits' attributes (`_hits`)."""
    predicate = compile_filter(filters)
    if filters is None:
        return None
    rows = data.db.execute(
        "SELECT file_id, attributes FROM store_files WHERE store_id = ? AND status = 'completed'",
        (store_id,),
    )
    return {r[0] for r in rows if predicate(json.loads(r[1]))}


def fuse(
    rankings: dict[str, list[tuple[int, float]]], weights: dict[str, float], fusion: str = "convex"
) -> list[tuple[int, float, dict]]:
    """(chunk id, fused score in [0, 1], {retriever: its rank, score and scaled score}), best first:
    the convex combination of min-max scaled scores, or weighted reciprocal rank fusion scaled so
    that a chunk first in every ranking scores 1."""
    total = sum(weights[name] for name in rankings) or 1.0
    fused: dict[int, float] = {}
    why: dict[int, dict] = {}
    for name, ranking in rankings.items():
        scores = np.asarray([score for _, score in ranking], np.float64)
        if fusion == "rrf":
            scaled = (RRF_K + 1) / (RRF_K + np.arange(1, len(ranking) + 1))
        else:
            low, high = (scores.min(), scores.max()) if len(scores) else (0.0, 0.0)
            scaled = (scores - low) / (high - low) if high > low else np.ones_like(scores)
        for rank, ((chunk_id, score), part) in enumerate(zip(ranking, scaled, strict=True), start=1):
            fused[chunk_id] = fused.get(chunk_id, 0.0) + weights[name] * float(part) / total
            why.setdefault(chunk_id, {})[name] = {
                "rank": rank,
                "score": round(score, 6),
                "scaled": round(float(part), 6),
            }
    return sorted(((c, s, why[c]) for c, s in fused.items()), key=lambda t: -t[1])


def search(
    data: AppData, store_id: str, query: str, query_vector: np.ndarray | None, options: SearchOptions
) -> list[Hit]:
    """The best chunks of the store for `query` (`query_vector`: its embedding, for the vector side)."""
    files = allowed_files(data, store_id, options.filters)
    depth = max(50, options.max_results * CANDIDATES_PER_RESULT)
    rankings: dict[str, list[tuple[int, float]]] = {}
    if options.mode in ("hybrid", "bm25") and options.bm25_weight > 0:
        rankings["bm25"] = bm25_ranking(data, store_id, query, depth, files)
    if options.mode in ("hybrid", "vector") and options.vector_weight > 0 and query_vector is not None:
        rankings["vector"] = vector_index(data, store_id).search(query_vector, depth, files)
    weights = {"bm25": options.bm25_weight, "vector": options.vector_weight}
    if options.mode == "hybrid":
        ranked = fuse(rankings, weights, options.fusion)
    else:
        only = rankings.get(options.mode, [])
        ranked = [
            (c, s, {options.mode: {"rank": i, "score": round(s, 6)}}) for i, (c, s) in enumerate(only, 1)
        ]
    ranked = [r for r in ranked if r[1] >= options.score_threshold][: options.max_results]
    return _hits(data, store_id, ranked, options.explain)


def _hits(data: AppData, store_id: str, ranked: list[tuple[int, float, dict]], explain: bool) -> list[Hit]:
    if not ranked:
        return []
    marks = ",".join("?" * len(ranked))
    rows = {
        r["id"]: r
        for r in data.db.execute(
            "SELECT c.id, c.file_id, c.text, c.start, c.end, c.ordinal, c.heading, c.meta, f.filename, "
            "sf.attributes FROM chunks c JOIN files f ON f.id = c.file_id JOIN store_files sf "
            f"ON sf.store_id = ? AND sf.file_id = c.file_id WHERE c.id IN ({marks})",
            [store_id, *(c for c, _, _ in ranked)],
        )
    }
    hits = []
    for chunk_id, score, why in ranked:
        row = rows.get(chunk_id)
        if row is None:  # deleted between ranking and reading
            continue
        hits.append(
            Hit(
                chunk_id,
                score,
                row["file_id"],
                row["filename"],
                row["text"],
                row["start"],
                row["end"],
                row["ordinal"],
                row["heading"],
                json.loads(row["meta"]),
                json.loads(row["attributes"]),
                why if explain else {},
            )
        )
    return hits
