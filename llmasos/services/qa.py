"""qa: the answer to a question from a given context, or from a vector store of the app's documents
with citations (file, chunk, span) — and "I don't know" when nothing relevant was retrieved, without
asking the model (a small model asked anyway makes an answer up)."""

from __future__ import annotations

from typing import Any, ClassVar

from llmasos.services.base import Call, Service, Session, common_params

QA_INPUT = {
    "type": "object",
    "properties": {
        "question": {"type": "string", "minLength": 1, "description": "what to answer"},
        "context": {"type": "string", "minLength": 1, "description": "the text the answer comes from"},
        "vector_store_id": {
            "type": "string",
            "minLength": 1,
            "description": "instead of a context: the app's vector store to retrieve it from",
        },
    },
    "required": ["question"],
    # A context is required unless a vector store is named.
    "if": {"not": {"required": ["vector_store_id"]}},
    "then": {"required": ["context"]},
    "additionalProperties": False,
}
#: Passages retrieved for an answer.
TOP_K = 4
#: Cosine (all-MiniLM-L6-v2) under which a passage that shares no content word with the question
#: is taken as unrelated: unrelated English sentences score about 0-0.2 with this model.
MIN_COSINE = 0.3
DONT_KNOW = "I don't know: nothing in the documents bears on this question."
SYSTEM = (
    "Answer the question using only the context. If the context does not say, reply that it does not say."
)
CITING_SYSTEM = (
    "Answer the question using only the numbered passages, and cite the passages you used as [1], [2]. "
    "If they do not say, reply that you do not know."
)


class QuestionAnswering(Service):
    name = "qa"
    description = (
        "Answer a question about a given text, using only that text, or from a vector store of the app's "
        "documents, with citations."
    )
    version = "1.1"
    examples: ClassVar[tuple[str, ...]] = (
        "Answer the question using this passage",
        "According to the document, what year did it happen?",
        "Given this context, who is the author?",
        "From the text below, find out where they live",
    )
    input_schema: ClassVar[dict] = QA_INPUT
    params_schema: ClassVar[dict] = common_params(256)
    output_schema: ClassVar[dict] = {"type": "string", "description": "the answer"}

    def _run(self, session: Session, input: dict, params: dict) -> tuple[Any, dict]:
        if "vector_store_id" in input:
            return self._from_store(session, input, params)
        messages = [
            {"role": "system", "content": SYSTEM},
            {"role": "user", "content": f"Context:\n{input['context']}\n\nQuestion: {input['question']}"},
        ]
        call = Call(messages, params["max_tokens"], params["temperature"], seed=params.get("seed"))
        done = session.chat(call)
        return done.text.strip(), {"finish_reason": done.finish_reason}

    def _from_store(self, session: Session, input: dict, params: dict) -> tuple[Any, dict]:
        from llmasos.data.search import SearchOptions
        from llmasos.tools.embed import load_embedder

        session.syscalls.use_embedder(load_embedder, replace=False)
        hits = session.syscalls.search_store(
            session.app,
            input["vector_store_id"],
            input["question"],
            SearchOptions(max_results=TOP_K, explain=True),
        )
        relevant = [
            h
            for h in hits
            if "bm25" in h.explain or h.explain.get("vector", {}).get("score", 0) >= MIN_COSINE
        ]
        if not relevant:
            return DONT_KNOW, {"citations": [], "finish_reason": "no_relevant_passages"}
        passages = "\n\n".join(f"[{i}] {h.text}" for i, h in enumerate(relevant, start=1))
        messages = [
            {"role": "system", "content": CITING_SYSTEM},
            {"role": "user", "content": f"Passages:\n{passages}\n\nQuestion: {input['question']}"},
        ]
        call = Call(messages, params["max_tokens"], params["temperature"], seed=params.get("seed"))
        done = session.chat(call)
        citations = [{"marker": f"[{i}]", **h.cited()} for i, h in enumerate(relevant, start=1)]
        return done.text.strip(), {"citations": citations, "finish_reason": done.finish_reason}
