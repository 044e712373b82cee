"""Fusing BM25 and vector rankings: the convex combination of min-max scaled scores keeps how far
ahead a first result is, where reciprocal rank fusion (k=60) lets a chunk that both retrievers put
in their middle outrank one that a retriever puts far ahead of the rest."""

from __future__ import annotations

import json

import pytest

from llmasos.data.app_data import app_data
from llmasos.data.search import SearchOptions, bm25_ranking, fuse
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
