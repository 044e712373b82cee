"""Answers with sources: the passages of an app's vector stores that bear on a question, the prompt
that numbers them for the model, and the citations of the answer (file, chunk, span).

One program for every interface that answers from documents: the `qa` service (`vector_store_id`)
and `/v1/responses` with OpenAI's `file_search` tool. When nothing relevant is retrieved the answer
is `DONT_KNOW`, given without asking the model (a small model asked anyway makes an answer up).

    passages = retrieve(syscalls, app, [store_id], question)
    if not passages: answer = DONT_KNOW
    else: answer = <the model, given `instructions(passages)`>; cites = annotations(answer, passages)
"""

from __future__ import annotations

import re
from typing import Any

from llmasos.data.search import Hit, SearchOptions

#: Passages retrieved for an answer.
TOP_K = 4
#: Cosine (all-MiniLM-L6-v2) under which a passage that shares no content word with the question
#: is taken as unrelated: unrelated English sentences score about 0-0.2 with this model.
MIN_COSINE = 0.3
DONT_KNOW = "I don't know: nothing in the documents bears on this question."
CITING_SYSTEM = (
    "Answer the question using only the numbered passages, and cite the passages you used as [1], [2]. "
    "If they do not say, reply that you do not know."
)
_MARKER = re.compile(r"\[(\d{1,2})\]")


def retrieve(syscalls: Any, app: Any, store_ids: list[str], question: str, top_k: int = TOP_K) -> list[Hit]:
    """The best `top_k` passages of the stores for `question` that bear on it (a BM25 match, or a
    cosine of at least MIN_COSINE), best first; each store is searched by the app's own system call
    (404 for a store that is not the app's)."""
    from llmasos.tools.embed import load_embedder

    syscalls.use_embedder(load_embedder, replace=False)
    hits: list[Hit] = []
    for store_id in dict.fromkeys(store_ids):
        options = SearchOptions(max_results=top_k, explain=True)
        hits += syscalls.search_store(app, store_id, question, options)
    relevant = [h for h in hits if is_relevant(h)]
    return sorted(relevant, key=lambda h: h.score, reverse=True)[:top_k]


def is_relevant(hit: Hit) -> bool:
    return "bm25" in hit.explain or hit.explain.get("vector", {}).get("score", 0) >= MIN_COSINE


def numbered(passages: list[Hit]) -> str:
    return "\n\n".join(f"[{i}] {h.text}" for i, h in enumerate(passages, start=1))


def instructions(passages: list[Hit], base: str | None = None) -> str:
    """A system message that gives the model the numbered passages (after `base`, the caller's own)."""
    parts = [base or "", CITING_SYSTEM, "Passages:\n" + numbered(passages)]
    return "\n\n".join(p for p in parts if p)


def citations(passages: list[Hit]) -> list[dict]:
    """Each passage's citation with its marker: file, chunk, span (for the qa service's details)."""
    return [{"marker": f"[{i}]", **h.cited()} for i, h in enumerate(passages, start=1)]


def annotations(text: str, passages: list[Hit]) -> list[dict]:
    """OpenAI's `file_citation` annotations of an answer: one per marker `[n]` the model wrote, at
    its position in `text`; when it wrote none, every passage it was given, at the end of the text
    (it answered from them). LLMasOS adds `chunk` and `span` (characters in the file's text)."""
    found = [
        (m.start(), int(m.group(1))) for m in _MARKER.finditer(text) if 1 <= int(m.group(1)) <= len(passages)
    ]
    if not found:
        found = [(len(text), n) for n in range(1, len(passages) + 1)]
    out = []
    for index, number in found:
        hit = passages[number - 1]
        out.append(
            {
                "type": "file_citation",
                "file_id": hit.file_id,
                "filename": hit.filename,
                "index": index,
                "chunk": hit.ordinal,
                "span": [hit.start, hit.end],
            }
        )
    return out


def search_results(passages: list[Hit]) -> list[dict]:
    """The `results` of a `file_search_call` output item, in OpenAI's shape."""
    return [
        {
            "file_id": h.file_id,
            "filename": h.filename,
            "score": round(h.score, 6),
            "text": h.text,
            "attributes": h.attributes,
        }
        for h in passages
    ]
