"""qa: the answer to a question from a given context, or from a vector store of the app's documents
with citations (file, chunk, span) — and "I don't know" when nothing relevant was retrieved, without
asking the model (`citing.py`, shared with `/v1/responses`' file_search)."""

from __future__ import annotations

from typing import Any, ClassVar

from llmasos.services import citing
from llmasos.services.base import Call, Service, Session, common_params
from llmasos.services.citing import DONT_KNOW

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
SYSTEM = (
    "Answer the question using only the context. If the context does not say, reply that it does not say."
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
        passages = citing.retrieve(
            session.syscalls, session.app, [input["vector_store_id"]], input["question"]
        )
        if not passages:
            return DONT_KNOW, {"citations": [], "finish_reason": "no_relevant_passages"}
        messages = [
            {"role": "system", "content": citing.CITING_SYSTEM},
            {
                "role": "user",
                "content": f"Passages:\n{citing.numbered(passages)}\n\nQuestion: {input['question']}",
            },
        ]
        call = Call(messages, params["max_tokens"], params["temperature"], seed=params.get("seed"))
        done = session.chat(call)
        details = {"citations": citing.citations(passages), "finish_reason": done.finish_reason}
        return done.text.strip(), details
