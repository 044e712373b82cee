"""Configuration: where state lives and how the engine is sized. Frozen; derived values are computed."""

from __future__ import annotations

import os
from dataclasses import dataclass
from pathlib import Path

#: The model every command uses when none is named.
DEFAULT_MODEL = "smollm2-135m-instruct"


def llmasos_home() -> Path:
    """The state directory: `$LLMASOS_HOME`, default `~/.llmasos`. Everything LLMasOS keeps lives here."""
    return Path(os.environ.get("LLMASOS_HOME") or Path.home() / ".llmasos").expanduser()


def models_dir() -> Path:
    """The model library's store."""
    return llmasos_home() / "models"


@dataclass(frozen=True)
class EngineConfig:
    """How one engine (one model, many sequences) is sized and placed."""

    # "auto" picks CUDA when present, else CPU.
    device: str = "auto"
    # "auto" is float32 on CPU (exact against references) and bfloat16 on CUDA; the next engine
    # issue adds the fast CPU paths.
    dtype: str = "auto"
    # auto|float32|bfloat16|int8|int4; auto: int4 on CPU if dtype is auto (resolve_weight_format).
    weight_format: str = "auto"
    # Tokens per KV block. 16 keeps internal fragmentation under one block per sequence small.
    block_size: int = 16
    # Bytes of KV cache to reserve; the pool's block count follows from the model's per-token size.
    kv_cache_bytes: int = 512 * 1024 * 1024
    # Most sequences in one forward pass.
    max_num_seqs: int = 32
    # Most tokens (decode tokens plus prefill chunks) in one forward pass; bounds step latency so a
    # long prompt never stalls running streams for more than one chunk, and a step's activations: the
    # C++ step's buffers of a 512-token chunk were 20.5 MB of SmolLM2's (the MLP's 3,072-wide
    # gate/up rows alone 6.3 MB), which the C heap keeps while a figure runs. At 256 the peak RSS of
    # `engine_vs_peers.py --quick`'s figures fell from 451 to 434 MB (with the prefix cache's 1,024
    # tokens); a token's numbers do not depend on its chunk (tests/engine/test_step_memory.py).
    max_num_batched_tokens: int = 256
    # Share computed KV blocks between sequences whose prompts start alike (within a namespace).
    enable_prefix_caching: bool = True
    # Most tokens of KV that ended sequences leave cached for reuse while no sequence holds them (the
    # prefix cache's idle blocks); past it the least recently freed is overwritten before a
    # never-written block of the (lazily mapped) pool is taken, so it bounds what the pool holds beyond
    # the sequences in flight. Unbounded, the cache took fresh pages for every answer and the server's
    # RSS grew by the whole 512 MB pool under load (598 -> 910 MB over server_load's 433 requests, and
    # staying). In tokens, so that every model keeps as much of its prompts (a fixed 64 MiB was 2,912
    # tokens of SmolLM2's KV and 512 of Llama-3-8B's). 1,024 tokens (23.6 MB of SmolLM2's) keep a
    # shared 512-token system prompt and a short chat's history; against 64 MiB they cut the peak RSS
    # of `engine_vs_peers.py --quick`'s 1,024-token prefill by 11 MB (its fresh blocks reuse the
    # batch figures' idle ones). The prompts in flight stay shared however large (blocks in use are
    # not idle), and idle blocks are only overwritten when a step needs blocks, so a sequence
    # suspended to recompute finds its context again if nothing ran between.
    prefix_cache_tokens: int = 1024
    # The same allowance in bytes of KV (config.toml's engine.prefix_cache_bytes); when set it takes
    # the place of `prefix_cache_tokens`.
    prefix_cache_bytes: int | None = None
    # torch intra-op threads; 0 leaves torch's default (one per core).
    num_threads: int = 0
    # Host memory for suspended sequences' KV, allocated and touched when the engine starts (it grows on
    # demand beyond this, in chunks it keeps). 0 (the default) allocates only on demand: touching a
    # 128 MB reserve was 0.26-0.39 s of every load and 128 MB of RSS that most engines never use,
    # while a first suspend into fresh memory pays ~35 ms of page faults for a 2,048-token SmolLM2
    # context (94 MB), once. At most the KV pool's size.
    swap_reserve_bytes: int = 0
    # int4/int8 layers also keep their weights dequantized to float32 for steps of more than
    # NATIVE_MAX_TOKENS tokens (long prefill chunks), which then take MKL's float32 GEMM instead of
    # the C++ kernels. Off by default: since the kernels' threads claim rows as they go, a 1,024-token
    # SmolLM2 prefill ran as fast without the copy (medians 374 vs 364 tok/s, 8 alternating runs on 2
    # threads; with a static split it had been 8% slower), and the copy costs ~424 MB. Ignored where the
    # C++ kernels are unavailable (the torch int ops need the copy for large steps).
    dense_prefill_weights: bool = False
    # auto|float32|bfloat16: the KV cache's element type. auto is bfloat16 where the weights are int4,
    # int8 or bfloat16 (the layers still compute in float32; only stored keys and values are rounded),
    # else the model's dtype (float32 on CPU: exact against references). bfloat16 halves KV memory: the
    # pool holds twice the tokens and a suspended sequence moves half the bytes. (Decode attention did
    # not get faster: 30 layers of 32 sequences at 150 tokens took 16-20 ms with either dtype.)
    kv_cache_dtype: str = "auto"
    # Most tokens one sequence (prompt and output) may take; 0 is the model's own context window. A
    # smaller window bounds what one request can hold of the KV pool (config.toml: engine.context_length).
    max_context_length: int = 0
    # Steps hold either decode tokens or prompt chunks, never both, and tokens appended to a sequence
    # after its prompt (a request taken over from a lost cluster node) are computed one per step as
    # decode steps compute them. A token's numerics then never depend on its batch, so a greedy stream
    # re-prefilled on another node continues exactly: SmolLM2's logprobs differed (by up to 9e-3) when a
    # decode token shared a step with prompt chunks, and when a stream's earlier outputs were
    # re-prefilled as one chunk; pure decode steps of 1, 16 or 32 sequences were bitwise equal. Cluster
    # nodes turn it on; one box leaves it off (a new prompt then joins the running streams' step).
    batch_invariant: bool = False
