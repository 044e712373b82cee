"""Built-in workflow functions, entering by the plugin door like any other: small text steps that
pre- and post-processing need between model calls (seed 004's preprocess → inference → postprocess)."""

from __future__ import annotations

import re

from llmasos.programs.registry import ProgramRegistry
from llmasos.tools.base import ToolContext
from llmasos.workflows.functions import function

TEXT = {"type": "string"}


@function(
    "clean_text",
    input_schema={
        "type": "object",
        "properties": {"text": TEXT, "max_chars": {"type": "integer", "minimum": 1, "default": 4000}},
        "required": ["text"],
        "additionalProperties": False,
    },
    output_schema={
        "type": "object",
        "properties": {"text": TEXT, "chars": {"type": "integer"}, "cut": {"type": "boolean"}},
        "required": ["text", "chars", "cut"],
    },
    description="Collapse whitespace, drop control characters, cut the text at max_chars on a word boundary.",
)
def clean_text(args: dict, context: ToolContext) -> dict:
    text = re.sub(r"[\x00-\x08\x0b-\x1f\x7f]", " ", args["text"])
    text = re.sub(r"\s+", " ", text).strip()
    limit = args.get("max_chars", 4000)
    cut = len(text) > limit
    if cut:
        text = text[:limit].rsplit(" ", 1)[0] if " " in text[:limit] else text[:limit]
    return {"text": text, "chars": len(text), "cut": cut}


@function(
    "join_texts",
    input_schema={
        "type": "object",
        "properties": {
            "texts": {"type": "array", "items": TEXT},
            "separator": {"type": "string", "default": "\n\n"},
        },
        "required": ["texts"],
        "additionalProperties": False,
    },
    output_schema={
        "type": "object",
        "properties": {"text": TEXT, "count": {"type": "integer"}},
        "required": ["text"],
    },
    description="Join a list of texts (a fan-out's outputs) into one, with a separator.",
)
def join_texts(args: dict, context: ToolContext) -> dict:
    texts = [t.strip() for t in args["texts"] if t.strip()]
    return {"text": args.get("separator", "\n\n").join(texts), "count": len(texts)}


def register(registry: ProgramRegistry) -> None:
    for program in (clean_text, join_texts):
        registry.register(program)
