"""qa: the answer to a question about a given context, from that context."""

from __future__ import annotations

from typing import Any, ClassVar

from llmasos.services.base import Call, Service, Session, common_params

QA_INPUT = {
    "type": "object",
    "properties": {
        "question": {"type": "string", "minLength": 1, "description": "what to answer"},
        "context": {"type": "string", "minLength": 1, "description": "the text the answer comes from"},
    },
    "required": ["question", "context"],
    "additionalProperties": False,
}


class QuestionAnswering(Service):
    name = "qa"
    description = "Answer a question about a given text, using only that text."
    version = "1.0"
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
        messages = [
            {
                "role": "system",
                "content": "Answer the question using only the context. If the context does not say, "
                "reply that it does not say.",
            },
            {"role": "user", "content": f"Context:\n{input['context']}\n\nQuestion: {input['question']}"},
        ]
        call = Call(messages, params["max_tokens"], params["temperature"], seed=params.get("seed"))
        done = session.chat(call)
        return done.text.strip(), {"finish_reason": done.finish_reason}
