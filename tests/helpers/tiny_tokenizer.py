"""A tiny byte-level BPE vocabulary (SmolLM2-shaped) for GGUF files written by the fast tests.

`add_tiny_tokenizer(writer)` adds only `tokenizer.*` keys; the caller writes the model's keys and
tensors. The vocabulary: three CONTROL tokens (`<|endoftext|>`, `<|im_start|>`, `<|im_end|>`) at
ids 0-2 like SmolLM2, all 256 byte-level symbols, then the merges a small deterministic BPE
trainer learns from the English text below, so common words become single tokens.
"""

from __future__ import annotations

import itertools
from collections import Counter

import gguf
from tokenizers import pre_tokenizers

SPECIAL_TOKENS = ("<|endoftext|>", "<|im_start|>", "<|im_end|>")
EOS_TOKEN_ID = 2  # <|im_end|>, as in SmolLM2
NUM_MERGES = 150

# SmolLM2's ChatML template (with its default system prompt).
CHAT_TEMPLATE = (
    "{% for message in messages %}{% if loop.first and messages[0]['role'] != 'system' %}"
    "{{ '<|im_start|>system\nYou are a helpful AI assistant named SmolLM, "
    "trained by Hugging Face<|im_end|>\n' }}"
    "{% endif %}{{'<|im_start|>' + message['role'] + '\n' + message['content'] + '<|im_end|>' + '\n'}}"
    "{% endfor %}{% if add_generation_prompt %}{{ '<|im_start|>assistant\n' }}{% endif %}"
)

_CORPUS = """
The quick brown fox jumps over the lazy dog. Hello world! Hello, how are you today?
I am a helpful assistant. The user asked the assistant a question and the assistant gave an answer.
You are a helpful AI assistant. This is a test of the tokenizer and the model. What is the capital
of France? The capital of France is Paris. There are many things in the world that we want to know.
It is good to be kind. We will write some code: def main(): return 0. The system is running and the
process is waiting for the scheduler. Tokens, models, memory and time: this is what an operating
system for language models manages. Please answer the question in one sentence. Thank you for
your help with this and that. Where is the user? When will the model finish? Here is the answer.
"""


def _byte_alphabet() -> list[str]:
    """The 256 byte-level symbols in byte order (GPT-2's bytes_to_unicode)."""
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
    return [mapping[b] for b in range(256)]


def _learn_merges(num_merges: int) -> list[tuple[str, str]]:
    """Plain BPE training on _CORPUS; ties go to the lexicographically smallest pair (deterministic)."""
    splitter = pre_tokenizers.Sequence(
        [
            pre_tokenizers.Digits(individual_digits=True),
            pre_tokenizers.ByteLevel(add_prefix_space=False, use_regex=True),
        ]
    )
    words = Counter(piece for piece, _ in splitter.pre_tokenize_str(_CORPUS))
    segmented = {word: list(word) for word in words}
    merges: list[tuple[str, str]] = []
    for _ in range(num_merges):
        pairs: Counter[tuple[str, str]] = Counter()
        for word, parts in segmented.items():
            for pair in itertools.pairwise(parts):
                pairs[pair] += words[word]
        if not pairs:
            break
        best = min(pairs, key=lambda pair: (-pairs[pair], pair))
        merges.append(best)
        for word, parts in segmented.items():
            merged: list[str] = []
            i = 0
            while i < len(parts):
                if i + 1 < len(parts) and (parts[i], parts[i + 1]) == best:
                    merged.append(parts[i] + parts[i + 1])
                    i += 2
                else:
                    merged.append(parts[i])
                    i += 1
            segmented[word] = merged
    return merges


def tiny_vocab() -> tuple[list[str], list[int], list[str]]:
    """(tokens, token types, merges as "left right" strings) of the tiny vocabulary."""
    merges = _learn_merges(NUM_MERGES)
    tokens = [*SPECIAL_TOKENS, *_byte_alphabet()]
    known = set(tokens)
    for left, right in merges:
        if left + right not in known:
            tokens.append(left + right)
            known.add(left + right)
    types = [int(gguf.TokenType.CONTROL)] * len(SPECIAL_TOKENS) + [int(gguf.TokenType.NORMAL)] * (
        len(tokens) - len(SPECIAL_TOKENS)
    )
    return tokens, types, [f"{left} {right}" for left, right in merges]


def add_tiny_tokenizer(writer: gguf.GGUFWriter, *, pre: str = "smollm", chat_template: bool = True) -> int:
    """Write the tiny vocabulary's `tokenizer.*` keys into `writer`; return the vocabulary size (< 512).
    `chat_template=False` writes none, as a base model's file has none."""
    tokens, types, merges = tiny_vocab()
    writer.add_tokenizer_model("gpt2")
    writer.add_tokenizer_pre(pre)
    writer.add_token_list(tokens)
    writer.add_token_types(types)
    writer.add_token_merges(merges)
    writer.add_bos_token_id(1)  # like SmolLM2: <|im_start|>, never added to prompts
    writer.add_eos_token_id(EOS_TOKEN_ID)
    writer.add_unk_token_id(0)
    writer.add_pad_token_id(EOS_TOKEN_ID)
    writer.add_add_bos_token(False)
    if chat_template:
        writer.add_chat_template(CHAT_TEMPLATE)
    return len(tokens)


# SentencePiece-style pieces for the tiny `llama` vocabulary, best (most frequent) first.
_SPM_PIECES = (
    "▁t", "he", "▁the", "▁a", "in", "er", "▁w", "or", "ld", "▁wor", "▁world", "▁H", "el", "lo", "ell",
    "▁Hello", "▁is", "▁s", "an", "▁an", "▁and", "▁m", "od", "▁mod", "▁model", "▁▁", "▁▁▁▁", "ing",
)  # fmt: skip
SPM_CHAT_TEMPLATE = (
    "{{ bos_token }}{% for message in messages %}"
    "{{ '[' + message['role'] + '] ' + message['content'] + '\n' }}"
    "{% endfor %}{% if add_generation_prompt %}{{ '[assistant] ' }}{% endif %}"
)


def tiny_spm_vocab() -> tuple[list[str], list[int], list[float]]:
    """(tokens, token types, scores) of a tiny SentencePiece vocabulary with byte fallback.

    `<unk>`, `<s>`, `</s>` at ids 0-2, the 256 byte tokens `<0xNN>`, `▁`, the printable ASCII
    characters, then the pieces above; a piece's score is higher the earlier it comes.
    """
    tokens = ["<unk>", "<s>", "</s>", *(f"<0x{b:02X}>" for b in range(256))]
    types = [int(gguf.TokenType.UNKNOWN), int(gguf.TokenType.CONTROL), int(gguf.TokenType.CONTROL)]
    types += [int(gguf.TokenType.BYTE)] * 256
    scores = [0.0] * len(tokens)
    singles = ["▁", *(chr(c) for c in range(33, 127))]
    for rank, piece in enumerate([*_SPM_PIECES, *singles]):
        tokens.append(piece)
        types.append(int(gguf.TokenType.NORMAL))
        scores.append(-float(rank))
    return tokens, types, scores


def add_tiny_spm_tokenizer(writer: gguf.GGUFWriter, *, chat_template: str | None = SPM_CHAT_TEMPLATE) -> int:
    """Write a tiny `llama` (SentencePiece BPE) vocabulary that adds BOS; return its size."""
    tokens, types, scores = tiny_spm_vocab()
    writer.add_tokenizer_model("llama")
    writer.add_token_list(tokens)
    writer.add_token_types(types)
    writer.add_token_scores(scores)
    writer.add_bos_token_id(1)
    writer.add_eos_token_id(2)
    writer.add_unk_token_id(0)
    writer.add_add_bos_token(True)
    writer.add_add_eos_token(False)
    if chat_template is not None:
        writer.add_chat_template(chat_template)
    return len(tokens)
