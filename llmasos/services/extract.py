"""extract: fields of a text as JSON of a given schema.

The output is produced under a JSON-schema grammar in the engine (constrained decoding), bounded so
that it always completes within the token budget, so it is valid JSON of the schema by
construction: no parsing of free text and no retries. The details say how the schema was bounded.
"""

from __future__ import annotations

import json
from typing import Any, ClassVar

from llmasos.engine.constrained import Grammar
from llmasos.errors import InvalidRequestError, LLMasOSError
from llmasos.programs.schemas import compile_schema, first_error
from llmasos.services.base import Call, Service, Session, common_params, text_schema

DEFAULT_MAX_TOKENS = 2048


class Extract(Service):
    name = "extract"
    description = "Extract fields from a text as JSON that is valid under a given JSON schema."
    version = "1.0"
    examples: ClassVar[tuple[str, ...]] = (
        "Extract the dates from this text",
        "Find the names and addresses mentioned here and return them as JSON",
        "Get the product, price and quantity from this order",
        "Parse this resume into fields",
    )
    input_schema: ClassVar[dict] = text_schema("the text to extract from")
    params_schema: ClassVar[dict] = common_params(
        DEFAULT_MAX_TOKENS,
        required=("schema",),
        schema={
            "type": "object",
            "description": "the JSON schema of the output (objects, arrays, strings, numbers, "
            "integers, booleans, null, enums; see llmasos.engine.json_schema)",
        },
    )
    output_schema: ClassVar[dict] = {"description": "a JSON value valid under params.schema"}

    def _run(self, session: Session, input: str, params: dict) -> tuple[Any, dict]:
        schema = params["schema"]
        messages = [
            {"role": "system", "content": "You extract information from texts and answer in JSON."},
            {
                "role": "user",
                "content": f"Extract from the text below a JSON value of this schema:\n"
                f"{json.dumps(schema, ensure_ascii=False)}\n\nText:\n{input}",
            },
        ]
        room = session.context_length - session.prompt_tokens(messages)
        budget = min(params["max_tokens"], room)
        if budget < 2:
            raise InvalidRequestError(
                f"the text and schema leave no room for the answer in {session.model}'s context window "
                f"of {session.context_length} tokens; shorten the text"
            )
        grammar = Grammar.json_schema(schema, session.tokenizer, budget)
        call = Call(
            messages,
            grammar.max_tokens,
            params["temperature"],
            repetition_penalty=1.0,  # JSON repeats quotes, commas and braces by design
            seed=params.get("seed"),
            logits_processors=(grammar.processor(),),
        )
        done = session.chat(call)
        try:
            value = json.loads(done.text)
        except ValueError as err:
            raise LLMasOSError(
                f"constrained decoding produced invalid JSON ({err}); please report it"
            ) from err
        error = first_error(compile_schema(grammar.schema, "the bounded schema"), value)
        if error is not None:
            raise LLMasOSError(f"constrained decoding broke the schema ({error.message}); please report it")
        bounds = grammar.bounds
        details = {
            "bounds": {
                "max_length": bounds.max_length,
                "max_items": bounds.max_items,
                "worst_case_tokens": grammar.max_tokens,
            },
            "finish_reason": done.finish_reason,
        }
        return value, details
