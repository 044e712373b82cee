"""summarize: a summary of a text of any length, map-reduce style when it exceeds the context window.

A text that fits one call (its prompt, and room for the summary) is summarized at once. A longer
one is cut by tokens into near-equal chunks, preferring to cut after a line or a sentence; every
chunk is summarized (the calls run as concurrent processes), the partial summaries are joined and
summarized in turn, again in chunks if they still do not fit: each round is a level. The details
report the split of every level.
"""

from __future__ import annotations

import math
from typing import Any, ClassVar

from llmasos.errors import InvalidRequestError
from llmasos.services.base import Call, Service, Session, common_params, text_schema

LENGTHS = {  # length -> (instruction, default max_tokens)
    "short": ("in one sentence", 64),
    "medium": ("in two or three sentences", 160),
    "long": ("in one paragraph of about six sentences", 320),
}
STYLES = {
    "paragraph": "Write plain prose.",
    "bullets": "Write it as a list of bullet points, each line starting with '- '.",
}
MAX_LEVELS = 8
_MARGIN = 8  # tokens of slack between a prompt plus its answer and the context window
_MIN_CHUNK = 64


class Summarize(Service):
    name = "summarize"
    description = "Summarize a text of any length (long texts are split and summarized map-reduce style)."
    version = "1.0"
    examples: ClassVar[tuple[str, ...]] = (
        "Summarize this text",
        "Give me a short summary of this report",
        "What are the main points of this document?",
        "Condense these notes into a few bullet points",
        "Make this long email shorter",
    )
    input_schema: ClassVar[dict] = text_schema("the text to summarize")
    params_schema: ClassVar[dict] = common_params(
        None,
        length={"enum": list(LENGTHS), "default": "medium", "description": "how long the summary is"},
        style={"enum": list(STYLES), "default": "paragraph", "description": "prose or bullet points"},
        chunk_tokens={
            "type": "integer",
            "minimum": _MIN_CHUNK,
            "maximum": 1_000_000,
            "description": "most tokens of input per call (default: what fits the context window)",
        },
    )
    output_schema: ClassVar[dict] = {"type": "string", "description": "the summary"}

    def _run(self, session: Session, input: str, params: dict) -> tuple[Any, dict]:
        instruction, default_tokens = LENGTHS[params["length"]]
        max_tokens = params.get("max_tokens", default_tokens)
        budget = self._chunk_budget(session, max_tokens, params.get("chunk_tokens"))
        text, levels = input, []
        for _ in range(MAX_LEVELS):
            chunks = _split(session.tokenizer, text, budget)
            if len(chunks) == 1:
                break
            levels.append({"chunks": len(chunks), "tokens_per_chunk": [n for _, n in chunks]})
            # Each partial summary is at most a third of its chunk, so every level shrinks the text.
            partial = max(16, min(max_tokens, budget // 3))
            calls = [
                Call(_messages(c, "in a few sentences", STYLES["paragraph"]), partial) for c, _ in chunks
            ]
            text = "\n\n".join(c.text.strip() for c in session.chat_many(calls))
        else:
            raise InvalidRequestError(f"the text did not fit in {MAX_LEVELS} levels of summaries")
        messages = _messages(text, instruction, STYLES[params["style"]])
        call = Call(messages, max_tokens, params["temperature"], seed=params.get("seed"))
        summary = session.chat(call).text.strip()
        input_tokens = len(session.tokenizer.encode(input, add_special_tokens=False))
        details = {
            "input_tokens": input_tokens,
            "chunk_tokens": budget,
            "chunks": levels[0]["chunks"] if levels else 1,
            "tokens_per_chunk": levels[0]["tokens_per_chunk"] if levels else [input_tokens],
            "levels": len(levels) + 1,  # the map levels and the final summary
            "split": levels,
        }
        return summary, details

    @staticmethod
    def _chunk_budget(session: Session, max_tokens: int, wanted: int | None) -> int:
        overhead = session.prompt_tokens(_messages("", LENGTHS["long"][0], STYLES["bullets"]))
        room = session.context_length - overhead - max_tokens - _MARGIN
        if room < _MIN_CHUNK:
            raise InvalidRequestError(
                f"max_tokens {max_tokens} leaves no room for input in {session.model}'s context window "
                f"of {session.context_length} tokens; lower max_tokens"
            )
        return min(room, wanted) if wanted else room


def _messages(text: str, instruction: str, style: str) -> list[dict]:
    # The instruction after the text: the default model keeps to it best there, even after long
    # inputs; partial summaries are passed as plain text (naming them confused it). "Summarize the text
    # above": with "Write a summary of this text in one sentence." SmolLM2 once answered "A sentence that
    # conveys the essence of the text without using bold formatting." (a three-times-chunked text, int4
    # weights); this phrasing summarized it at both lengths tried under int4 (both kernels) and fp32.
    return [
        {"role": "system", "content": "You write accurate, concise summaries."},
        {"role": "user", "content": f"Text:\n{text}\n\nSummarize the text above {instruction}. {style}"},
    ]


def _split(tokenizer: Any, text: str, budget: int) -> list[tuple[str, int]]:
    """[(chunk text, its tokens)]: near-equal chunks of at most `budget` tokens."""
    encoding = tokenizer.backend.encode(text, add_special_tokens=False)
    ids, offsets = encoding.ids, encoding.offsets
    n = len(ids)
    if n <= budget:
        return [(text, n)]
    cuts, start = [], 0
    while start < n:
        # Sized afresh from what is left, so a cut moved back to a line end leaves no small tail.
        left = n - start
        end = start + math.ceil(left / math.ceil(left / budget))
        if end < n:
            end = _break_near(text, offsets, start, end)
        cuts.append((start, end))
        start = end
    chunks = []
    for start, end in cuts:
        # From this chunk's first character to the next chunk's: no text falls between two chunks.
        stop = offsets[end][0] if end < n else len(text)
        chunks.append((text[offsets[start][0] : stop], end - start))
    return chunks


def _break_near(text: str, offsets: list[tuple[int, int]], start: int, end: int) -> int:
    """A cut at or before `end`, after a line end or else a sentence end in the chunk's last quarter."""
    floor = start + max(1, 3 * (end - start) // 4)
    for marks in ("\n", ".!?"):
        for k in range(end - 1, floor - 1, -1):
            piece = text[offsets[k][0] : offsets[k][1]].rstrip(" ")
            if piece and piece[-1] in marks:
                return k + 1
    return end
