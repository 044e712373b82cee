"""What the benchmark runs: the sizes of every figure and the prompts (token ids) every engine gets."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

TEXT = (
    "The history of computing is a story of layers: hardware, then operating systems that share it "
    "between programs, then languages and libraries that make programs easier to write. Each layer "
    "hides the one below it and lends its resources to many users at once, fairly and safely. "
)


@dataclass(frozen=True)
class Workload:
    """Sizes of every figure; `--quick` shrinks the token counts for a smoke run."""

    new_tokens: int = 128
    batch_sizes: tuple[int, ...] = (8, 32)
    batch_prompt_len: int = 32
    single_prompt_len: int = 16
    prefill_len: int = 1024
    shared_prefix_len: int = 512
    shared_requests: int = 32
    suspend_context: int = 2048
    repeats: int = 2  # best of, for the short figures (single stream, prefill)

    @classmethod
    def quick(cls) -> Workload:
        return cls(new_tokens=16, shared_requests=8, repeats=1)


SUSPEND_MODES = ("swap", "keep", "recompute")


SUSPEND_CYCLES = 5


def prompt_ids(tokenizer: Any, n: int, salt: str) -> list[int]:
    """Exactly `n` token ids of English text, different for every `salt`.

    The salt comes first so that no two prompts share a leading KV block: otherwise LLMasOS's prefix
    cache would serve a repeat (or a warm-up's prompt) from memory and its prefill figures would lie.
    """
    ids = tokenizer.encode(f"[{salt}] ")
    body = tokenizer.encode(TEXT)
    while len(ids) < n:
        ids += body
    return ids[:n]


def build_prompts(tokenizer: Any, wl: Workload) -> dict[str, list[int]]:
    """Every prompt of every figure, by name, made once by the parent.

    Workers get token ids, not text: every engine sees the very same ids, and the peers' processes
    never load LLMasOS's tokenizer (and torch with it), which would count in their peak RSS."""
    prompts: dict[str, list[int]] = {}

    def add(name: str, n: int) -> None:
        prompts[name] = prompt_ids(tokenizer, n, name)

    for i in range(4):
        add(f"warm-{i}", 24)
    for r in range(wl.repeats):
        add(f"single-{r}", wl.single_prompt_len)
        add(f"prefill-{r}", wl.prefill_len)
    for b in wl.batch_sizes:
        for i in range(b):
            add(f"b{b}-{i}", wl.batch_prompt_len)
    system = prompt_ids(tokenizer, wl.shared_prefix_len, "system")
    for i in range(wl.shared_requests):
        prompts[f"shared-{i}"] = system + tokenizer.encode(f"\nUser {i}: what is {i} times {i + 7}?")
    for mode in SUSPEND_MODES:
        # A prompt per mode, so one mode's blocks cannot serve another's recompute from the cache.
        # Two tokens short: the prefill and two decode steps of fig_suspend leave exactly
        # suspend_context tokens computed (a step computes the token sampled by the step before).
        add(f"ctx-{mode}", wl.suspend_context - 2)
    return prompts
