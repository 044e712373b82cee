"""Token logprobs in OpenAI's two shapes: chat's `choices[].logprobs.content[]` and the legacy
completions' `choices[].logprobs` (`tokens`, `token_logprobs`, `top_logprobs`, `text_offset`).

The engine reports ids and numbers (`engine.sampling.TokenLogprobs`: computed from the logits the
draw used, after logit_bias and penalties, before temperature, top-k and top-p); this module spells
each id as OpenAI does: its text and its UTF-8 `bytes` (a token may hold part of a character, so its
text can be `"\\xe2\\x80"` while its bytes stay exact).
"""

from __future__ import annotations

import functools
import math
import re
from collections.abc import Sequence
from typing import Any

from llmasos.engine.sampling_params import TokenLogprobs
from llmasos.model.tokenizer import Tokenizer

#: What OpenAI reports for a token with no probability at all (JSON has no -Infinity).
MIN_LOGPROB = -9999.0
_BYTE_TOKEN = re.compile(r"<0x([0-9A-Fa-f]{2})>")


@functools.cache
def _byte_level_decoder() -> dict[str, int]:
    """GPT-2's byte-level alphabet, inverted: the character each byte is spelled with -> the byte."""
    printable = [
        *range(ord("!"), ord("~") + 1),
        *range(ord("¡"), ord("¬") + 1),
        *range(ord("®"), ord("ÿ") + 1),
    ]
    chars, extra = {}, 0
    for byte in range(256):
        if byte in printable:
            chars[chr(byte)] = byte
        else:
            chars[chr(256 + extra)] = byte
            extra += 1
    return chars


@functools.lru_cache(maxsize=1 << 16)
def token_bytes(tokenizer: Tokenizer, token_id: int) -> bytes:
    """The bytes `token_id` stands for: byte-level BPE symbols mapped back to bytes, SentencePiece's
    `<0xNN>` byte tokens and `▁` spaces, or the token's own spelling (special tokens)."""
    piece = tokenizer.id_to_token(token_id)
    if "ByteLevel" in repr(tokenizer.backend.decoder):
        decoder = _byte_level_decoder()
        if all(c in decoder for c in piece):
            return bytes(decoder[c] for c in piece)
    match = _BYTE_TOKEN.fullmatch(piece)
    if match:
        return bytes([int(match.group(1), 16)])
    return piece.replace("▁", " ").encode("utf-8")


def token_text(tokenizer: Tokenizer, token_id: int) -> str:
    return token_bytes(tokenizer, token_id).decode("utf-8", errors="backslashreplace")


def _number(logprob: float) -> float:
    return logprob if math.isfinite(logprob) else MIN_LOGPROB


def _entry(tokenizer: Tokenizer, token_id: int, logprob: float) -> dict[str, Any]:
    return {
        "token": token_text(tokenizer, token_id),
        "logprob": _number(logprob),
        "bytes": list(token_bytes(tokenizer, token_id)),
    }


def chat_logprobs(tokenizer: Tokenizer, logprobs: Sequence[TokenLogprobs]) -> dict[str, Any]:
    """`{"content": [...]}`: each token with its logprob, bytes and `top_logprobs` alternatives."""
    content = []
    for item in logprobs:
        entry = _entry(tokenizer, item.token_id, item.logprob)
        entry["top_logprobs"] = [_entry(tokenizer, token_id, lp) for token_id, lp in item.top]
        content.append(entry)
    return {"content": content}


def completion_logprobs(
    tokenizer: Tokenizer, logprobs: Sequence[TokenLogprobs], text_offset: int = 0
) -> dict[str, Any]:
    """The legacy shape: parallel lists, `top_logprobs` as {token text: logprob} (the sampled token
    included, as OpenAI's), `text_offset` counting characters from `text_offset`."""
    tokens, token_logprobs, tops, offsets = [], [], [], []
    for item in logprobs:
        text = token_text(tokenizer, item.token_id)
        tokens.append(text)
        token_logprobs.append(_number(item.logprob))
        top = {token_text(tokenizer, token_id): _number(lp) for token_id, lp in item.top}
        top.setdefault(text, _number(item.logprob))
        tops.append(top)
        offsets.append(text_offset)
        text_offset += len(tokenizer.decode([item.token_id]))
    return {"tokens": tokens, "token_logprobs": token_logprobs, "top_logprobs": tops, "text_offset": offsets}
