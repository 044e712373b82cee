"""GGUF vocabularies as `tokenizers` backends: what `tokenizer.ggml.*` metadata describes, rebuilt.

Byte-level BPE (`gpt2`, with the pre-tokenizer `tokenizer.ggml.pre` names) and SentencePiece-style
BPE with byte fallback (`llama`, merges from the file or derived from the scores).
"""

from __future__ import annotations

from collections.abc import Sequence
from functools import lru_cache
from typing import Any

import gguf
import tokenizers
from tokenizers import Regex, decoders, models, pre_tokenizers

from llmasos.errors import ModelFormatError, UnsupportedModelError

# llama.cpp's token types (gguf.TokenType).
NORMAL, UNKNOWN, CONTROL, USER_DEFINED = 1, 2, 3, 4

# Pre-tokenizer regexes, as llama.cpp and transformers define them for these vocabularies.
_LLAMA3_SPLIT = (
    r"(?i:'s|'t|'re|'ve|'m|'ll|'d)|[^\r\n\p{L}\p{N}]?\p{L}+|\p{N}{1,3}"
    r"| ?[^\s\p{L}\p{N}]+[\r\n]*|\s*[\r\n]+|\s+(?!\S)|\s+"
)
_QWEN2_SPLIT = (
    r"(?i:'s|'t|'re|'ve|'m|'ll|'d)|[^\r\n\p{L}\p{N}]?\p{L}+|\p{N}"
    r"| ?[^\s\p{L}\p{N}]+[\r\n]*|\s*[\r\n]+|\s+(?!\S)|\s+"
)
_SPLIT_REGEXES = {
    "llama-bpe": _LLAMA3_SPLIT,
    "llama3": _LLAMA3_SPLIT,
    "llama-v3": _LLAMA3_SPLIT,
    "qwen2": _QWEN2_SPLIT,
    "deepseek-r1-qwen": _QWEN2_SPLIT,
}
#: Values of `tokenizer.ggml.pre` a byte-level (`gpt2`) vocabulary may have.
SUPPORTED_PRE_TOKENIZERS: tuple[str, ...] = ("default", "gpt-2", "gpt2", "smollm", *_SPLIT_REGEXES)
#: Values of `tokenizer.ggml.model` we can build.
SUPPORTED_MODELS: tuple[str, ...] = ("gpt2", "llama")


@lru_cache(maxsize=1)
def _bytes_to_unicode() -> dict[int, str]:
    """GPT-2's map from each byte to a printable character: how byte-level vocabularies spell bytes."""
    printable = [
        *range(ord("!"), ord("~") + 1),
        *range(ord("¡"), ord("¬") + 1),
        *range(ord("®"), ord("ÿ") + 1),
    ]
    mapping = {b: chr(b) for b in printable}
    extra = 0
    for b in range(256):
        if b not in mapping:
            mapping[b] = chr(256 + extra)
            extra += 1
    return mapping


def _byte_level_pre_tokenizer(pre: str) -> pre_tokenizers.PreTokenizer:
    if pre == "smollm":
        # SmolLM2's tokenizer.json: every digit its own piece, then GPT-2's byte-level split.
        return pre_tokenizers.Sequence(
            [
                pre_tokenizers.Digits(individual_digits=True),
                pre_tokenizers.ByteLevel(add_prefix_space=False, use_regex=True),
            ]
        )
    if pre in ("default", "gpt-2", "gpt2"):
        return pre_tokenizers.ByteLevel(add_prefix_space=False, use_regex=True)
    if pre in _SPLIT_REGEXES:
        return pre_tokenizers.Sequence(
            [
                pre_tokenizers.Split(Regex(_SPLIT_REGEXES[pre]), behavior="isolated"),
                pre_tokenizers.ByteLevel(add_prefix_space=False, use_regex=False),
            ]
        )
    raise UnsupportedModelError(
        f"the model's tokenizer uses the pre-tokenizer {pre!r}, which LLMasOS does not support; "
        f"supported: {', '.join(SUPPORTED_PRE_TOKENIZERS)}"
    )


def _spm_merges(tokens: Sequence[str], scores: Sequence[float]) -> list[tuple[str, str]]:
    """Merges implied by a SentencePiece vocabulary, best first, as transformers' converter derives them.

    Every token that splits into two tokens of the vocabulary yields a merge ranked by the token's
    score (higher first); among equal scores the longer left piece, then the longer right piece,
    then the earlier token, then the lower ids of the two pieces win.
    """
    vocab: dict[str, int] = {}
    for index, token in enumerate(tokens):
        vocab.setdefault(token, index)
    ranked: list[tuple[float, int, int, int, int, int, str, str]] = []
    for index, (token, score) in enumerate(zip(tokens, scores, strict=True)):
        for cut in range(1, len(token)):
            left, right = token[:cut], token[cut:]
            if left in vocab and right in vocab:
                ranked.append(
                    (-score, -len(left), -len(right), index, vocab[left], vocab[right], left, right)
                )
    ranked.sort()
    return [(left, right) for *_, left, right in ranked]


class GGUFFields:
    """Read access to a GGUF's metadata with clear errors for missing keys."""

    def __init__(self, reader: gguf.GGUFReader) -> None:
        self._fields = reader.fields

    def get(self, key: str, default: Any = None) -> Any:
        field = self._fields.get(key)
        return default if field is None else field.contents()

    def require(self, key: str) -> Any:
        if key not in self._fields:
            raise ModelFormatError(f"the GGUF file has no {key!r}; it does not describe a tokenizer")
        return self._fields[key].contents()


def byte_level_backend(fields: GGUFFields, tokens: list[str], types: list[int]) -> tokenizers.Tokenizer:
    pre = str(fields.get("tokenizer.ggml.pre", "default"))
    pre_tokenizer = _byte_level_pre_tokenizer(pre)  # fail on the pre-tokenizer before the heavy work
    spelling = _bytes_to_unicode()
    alphabet = set(spelling.values())
    vocab: dict[str, int] = {}
    for index, (token, kind) in enumerate(zip(tokens, types, strict=True)):
        # Some converters store a normal token as raw text rather than in the byte alphabet; spell it
        # in bytes so the BPE can produce it. Special tokens keep their text: that is what they match.
        if kind == NORMAL and not set(token) <= alphabet:
            token = "".join(spelling[b] for b in token.encode("utf-8"))
        vocab.setdefault(token, index)
    merges = [_split_merge(m) for m in fields.get("tokenizer.ggml.merges") or []]
    try:
        model = models.BPE(vocab=vocab, merges=merges, fuse_unk=False, byte_fallback=False)
    except Exception as exc:
        raise ModelFormatError(
            f"the GGUF's byte-level vocabulary and merges do not fit together: {exc}"
        ) from exc
    backend = tokenizers.Tokenizer(model)
    backend.pre_tokenizer = pre_tokenizer
    backend.decoder = decoders.ByteLevel()
    return backend


def sentencepiece_backend(
    fields: GGUFFields, tokens: list[str], types: list[int], architecture: str, add_space_prefix: bool
) -> tokenizers.Tokenizer:
    if architecture.startswith("gemma"):
        # Gemma files store runs of spaces as real spaces and their scores do not follow merge
        # order; the file order does (as transformers' converter notes). Respell and rank by position.
        tokens = ["▁" * len(t) if t and not t.strip(" ") else t for t in tokens]
        scores = [-float(i) for i in range(len(tokens))]
    else:
        scores = fields.get("tokenizer.ggml.scores") or [0.0] * len(tokens)
    vocab: dict[str, int] = {}
    for index, token in enumerate(tokens):
        vocab.setdefault(token, index)
    file_merges = fields.get("tokenizer.ggml.merges")
    merges = [_split_merge(m) for m in file_merges] if file_merges else _spm_merges(tokens, scores)
    unk = fields.get("tokenizer.ggml.unknown_token_id")
    unk_token = tokens[unk] if isinstance(unk, int) and 0 <= unk < len(tokens) else None
    try:
        model = models.BPE(vocab=vocab, merges=merges, unk_token=unk_token, fuse_unk=True, byte_fallback=True)
    except Exception as exc:
        raise ModelFormatError(
            f"the GGUF's SentencePiece vocabulary does not form a tokenizer: {exc}"
        ) from exc
    backend = tokenizers.Tokenizer(model)
    # SentencePiece writes spaces as ▁ and (unless the file says not to) puts one before the text.
    backend.pre_tokenizer = pre_tokenizers.Metaspace(
        replacement="▁", prepend_scheme="first" if add_space_prefix else "never", split=False
    )
    steps = [decoders.Replace("▁", " "), decoders.ByteFallback(), decoders.Fuse()]
    if add_space_prefix:
        steps.append(decoders.Strip(content=" ", left=1, right=0))
    backend.decoder = decoders.Sequence(steps)
    return backend


def _split_merge(merge: str) -> tuple[str, str]:
    # Merges are "left right"; tokens of a BPE merge never contain a space, but splitting on the
    # first space only keeps a right-hand piece intact if one ever does.
    left, sep, right = merge.partition(" ")
    if not sep:
        raise ModelFormatError(f"malformed merge {merge!r} in the GGUF: expected 'left right'")
    return left, right
