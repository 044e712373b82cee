"""classify: which one of the given labels a text belongs to.

The answer is constrained in the engine to be exactly one of the labels (constrained decoding over
the model's vocabulary), so even a model that would ramble or invent a label can only pick one.
"""

from __future__ import annotations

from typing import Any, ClassVar

from llmasos.engine.constrained import Grammar
from llmasos.services.base import Call, Service, Session, common_params, text_schema

LABELS = {
    "type": "array",
    "items": {"type": "string", "minLength": 1, "maxLength": 200},
    "minItems": 1,
    "maxItems": 200,
    "description": "the labels to choose from",
}


class Classify(Service):
    name = "classify"
    description = "Classify a text into exactly one of the given labels (e.g. positive or negative)."
    version = "1.0"
    examples: ClassVar[tuple[str, ...]] = (
        "Label this message as urgent or not urgent",
        "Is the sentiment of this tweet happy, sad or angry?",
        "Categorize this ticket: billing, technical or other",
        "Decide whether this comment is toxic",
    )
    input_schema: ClassVar[dict] = text_schema("the text to classify")
    params_schema: ClassVar[dict] = common_params(
        None,
        required=("labels",),
        labels=LABELS,
        instructions={"type": "string", "description": "what the labels mean or how to choose"},
    )
    output_schema: ClassVar[dict] = {"type": "string", "description": "one of the labels, exactly"}

    def _run(self, session: Session, input: str, params: dict) -> tuple[Any, dict]:
        labels = list(dict.fromkeys(params["labels"]))
        grammar = Grammar.choice(labels, session.tokenizer)
        hint = f" {params['instructions']}" if params.get("instructions") else ""
        # The shape the default model follows best among those tried (labels in the system prompt).
        messages = [
            {
                "role": "system",
                "content": f"You are a classifier. Reply with exactly one of: {', '.join(labels)}.{hint}",
            },
            {"role": "user", "content": f"Classify this text: {input}"},
        ]
        max_tokens = max(params.get("max_tokens", 0), grammar.max_tokens)
        call = Call(
            messages,
            max_tokens,
            params["temperature"],
            repetition_penalty=1.0,  # a label may repeat words of the text
            seed=params.get("seed"),
            logits_processors=(grammar.processor(),),
        )
        done = session.chat(call)
        return done.text, {"labels": labels, "finish_reason": done.finish_reason}
