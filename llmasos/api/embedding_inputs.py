"""What /v1/embeddings checks and does beyond running the embedder: inputs over the model's window
are refused (not silently cut), and `dimensions` shortens each vector.

Over-long inputs: a 413 (the contract's status for input too long for the model, as `/api/embed`
with `truncate: false` answers) naming the input's index and its token count, rather than chunking. Chunking
would return one vector per chunk (or an average that stands for no part of the text well); the
caller knows where its text may be split (paragraphs, sections), so it splits and embeds the parts.
"""

from __future__ import annotations

import functools
import math

from tokenizers import Tokenizer

from llmasos.errors import ContextWindowExceededError, InvalidRequestError


@functools.lru_cache(maxsize=4)
def _untruncated(tokenizer: Tokenizer) -> Tokenizer:
    """A copy of the embedder's tokenizer that counts every token (the embedder's own truncates)."""
    copy = Tokenizer.from_str(tokenizer.to_str())
    copy.no_truncation()
    copy.no_padding()
    return copy


def refuse_over_window(tokenizer: Tokenizer, window: int, texts: list[str], model: str, listed: bool) -> None:
    """ContextWindowExceededError naming the first input of more than `window` tokens ([CLS] and
    [SEP] included)."""
    counts = [len(e.ids) for e in _untruncated(tokenizer).encode_batch(texts)]
    for index, count in enumerate(counts):
        if count > window:
            where = f"input.{index}" if listed else "input"
            raise ContextWindowExceededError(
                f"{where} has {count} tokens but {model} reads at most {window}; split it into parts of "
                f"at most {window} tokens (by paragraph, say) and embed each part"
            )


def shorten(vectors: list[list[float]], dimensions: int | None, model: str) -> list[list[float]]:
    """Each vector cut to its first `dimensions` values and scaled back to unit length (as OpenAI's
    text-embedding-3 models do); unchanged when `dimensions` is None."""
    if dimensions is None:
        return vectors
    full = len(vectors[0]) if vectors else dimensions
    if dimensions > full:
        raise InvalidRequestError(f"dimensions must be at most {full} for {model}, got {dimensions}")
    shortened = []
    for vector in vectors:
        head = vector[:dimensions]
        norm = math.sqrt(sum(x * x for x in head)) or 1.0
        shortened.append([x / norm for x in head])
    return shortened
