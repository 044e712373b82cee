"""translate: a text in another language (the source language may be named or left to the model)."""

from __future__ import annotations

from typing import Any, ClassVar

from llmasos.services.base import Call, Service, Session, common_params, text_schema

_LANGUAGE = {"type": "string", "minLength": 1, "maxLength": 64}


class Translate(Service):
    name = "translate"
    description = "Translate a text into another language (e.g. English to French)."
    version = "1.0"
    examples: ClassVar[tuple[str, ...]] = (
        "Translate this into Italian",
        "What is this sentence in Japanese?",
        "Can you say this in English?",
        "Convert this paragraph from Dutch to English",
    )
    input_schema: ClassVar[dict] = text_schema("the text to translate")
    params_schema: ClassVar[dict] = common_params(
        512,
        required=("target",),
        target={**_LANGUAGE, "description": "the language to translate into, e.g. French"},
        source={**_LANGUAGE, "description": "the language of the text (default: detected by the model)"},
    )
    output_schema: ClassVar[dict] = {"type": "string", "description": "the translation"}

    def _run(self, session: Session, input: str, params: dict) -> tuple[Any, dict]:
        source = f" from {params['source']}" if params.get("source") else ""
        messages = [
            {"role": "system", "content": "You are a translator. Reply with the translation only."},
            {"role": "user", "content": f"Translate this{source} to {params['target']}:\n\n{input}"},
        ]
        # Small models add notes after the translation; a one-paragraph text ends at the first blank line.
        stop = () if "\n\n" in input.strip() else ("\n\n",)
        call = Call(messages, params["max_tokens"], params["temperature"], seed=params.get("seed"), stop=stop)
        done = session.chat(call)
        return done.text.strip(), {"target": params["target"], "finish_reason": done.finish_reason}
