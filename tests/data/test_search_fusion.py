"""Fusing BM25 and vector rankings: the convex combination of min-max scaled scores keeps how far
ahead a first result is, where reciprocal rank fusion (k=60) lets a chunk that both retrievers put
in their middle outrank one that a retriever puts far ahead of the rest."""

from __future__ import annotations

import json
import random

import pytest

from llmasos.data.app_data import app_data
from llmasos.data.search import SearchOptions, bm25_ranking, fts_query, fuse
from llmasos.errors import InvalidRequestError
from tests.data.conftest import DataWorld

WEIGHTS = {"bm25": 1.0, "vector": 1.0}
# Chunk 1 is BM25's clear winner and not among the vector candidates; chunk 2 is in the middle of both.
RANKINGS = {
    "bm25": [(1, 12.0)] + [(100 + i, 3.0 - 0.1 * i) for i in range(8)] + [(2, 2.0)],
    "vector": [(200 + i, 0.60 - 0.01 * i) for i in range(8)] + [(2, 0.50), (300, 0.45)],
}


def test_a_clear_first_result_of_one_retriever_outranks_a_middling_one_of_both() -> None:
    convex = [chunk for chunk, _, _ in fuse(RANKINGS, WEIGHTS, "convex")]
    rrf = [chunk for chunk, _, _ in fuse(RANKINGS, WEIGHTS, "rrf")]
    assert convex[0] == 1 and convex.index(1) < convex.index(2)
    assert rrf[0] == 2  # what RRF did: 2/70 beats 1/61


def test_fused_scores_lie_in_0_1_and_explain_each_retriever() -> None:
    fused = fuse(RANKINGS, WEIGHTS, "convex")
    assert all(0.0 <= score <= 1.0 for _, score, _ in fused)
    chunk, score, why = fused[0]
    assert chunk == 1
    assert why == {"bm25": {"rank": 1, "score": 12.0, "scaled": 1.0}} and score == pytest.approx(0.5)
    both = fuse({"bm25": [(7, 3.0)], "vector": [(7, 0.9)]}, WEIGHTS, "convex")
    assert both[0][:2] == (7, pytest.approx(1.0))  # first in every ranking scores 1
    weighted = fuse(RANKINGS, {"bm25": 3.0, "vector": 1.0}, "convex")
    assert dict((c, s) for c, s, _ in weighted)[1] == pytest.approx(0.75)


def test_an_unknown_fusion_is_refused() -> None:
    with pytest.raises(InvalidRequestError, match="fusion"):
        SearchOptions(fusion="magic")


def test_bm25_finds_a_stores_match_when_another_stores_matches_rank_above_it(world: DataWorld) -> None:
    """The app's full-text index spans its stores: a store whose only match ranks below many of
    another store's still finds it."""
    crowded = world.syscalls.create_store(world.alpha, "crowded")
    sparse = world.syscalls.create_store(world.alpha, "sparse")
    notes = "\n".join(json.dumps({"text": f"apple apple orchard note {i}"}) for i in range(120))
    world.add_document(world.alpha, crowded["id"], "apples.jsonl", notes.encode())
    world.add_document(
        world.alpha, sparse["id"], "one.md", b"A long note that mentions an apple once among many words."
    )
    data = app_data(world.alpha.identity)
    found = bm25_ranking(data, sparse["id"], "apple", 10, None)
    assert len(found) == 1
    assert len(bm25_ranking(data, crowded["id"], "apple", 10, None)) == 10


def _full_scoring(
    data, store_id: str, query: str, limit: int, files: set[str] | None
) -> list[tuple[int, float]]:
    """The ranking before FTS5 ranked on its own: every match joined to its chunk, then filtered,
    then sorted (best score first, ties by chunk id)."""
    rows = data.db.execute(
        "SELECT c.id, -bm25(chunks_fts), c.store_id, c.file_id FROM chunks_fts "
        "JOIN chunks c ON c.id = chunks_fts.rowid WHERE chunks_fts MATCH ?",
        (fts_query(query),),
    )
    kept = [(r[0], r[1]) for r in rows if r[2] == store_id and (files is None or r[3] in files)]
    return sorted(kept, key=lambda hit: (-hit[1], hit[0]))[:limit]


def test_bm25s_fast_top_k_equals_full_scoring_across_stores_and_filters(world: DataWorld) -> None:
    """FTS5 takes its top rows before they are joined to their store and file; a store that holds
    few of the matches, or a filter that drops most of them, must still get the same top-k as
    scoring every match (the cut is made again over the store's own matches when it falls short)."""
    vocabulary = [f"term{i}" for i in range(12)]
    rng = random.Random(7)

    def notes(count: int) -> bytes:
        lines = (" ".join(rng.choices(vocabulary, k=rng.randint(3, 14))) for _ in range(count))
        return "\n".join(json.dumps({"text": line}) for line in lines).encode()

    main = world.syscalls.create_store(world.alpha, "main")
    other = world.syscalls.create_store(world.alpha, "other")
    kept = world.add_document(world.alpha, main["id"], "kept.jsonl", notes(40), attributes={"kind": "kept"})
    world.add_document(world.alpha, main["id"], "dropped.jsonl", notes(60), attributes={"kind": "dropped"})
    world.add_document(world.alpha, other["id"], "crowd.jsonl", notes(300))
    data = app_data(world.alpha.identity)
    calls = {"fast": 0, "again": 0}
    execute = data.db.execute

    def counting(sql: str, params=()):  # which of the two ways each ranking took
        calls["again" if "json_each" in sql else "fast"] += "chunks_fts" in sql
        return execute(sql, params)

    data.db.execute = counting  # type: ignore[method-assign]
    cases = 0
    for query in (" ".join(rng.sample(vocabulary, rng.randint(1, 3))) for _ in range(25)):
        for store_id, files in ((main["id"], None), (main["id"], {kept["id"]}), (other["id"], None)):
            for limit in (1, 5, 20):
                fast = bm25_ranking(data, store_id, query, limit, files)
                assert [c for c, _ in fast] == [
                    c for c, _ in _full_scoring(data, store_id, query, limit, files)
                ]
                cases += 1
    assert calls["again"] and calls["fast"] > calls["again"], calls  # both ways were taken
    assert cases == 25 * 9
