"""LLMasOS against its peers: llama.cpp (as shipped and re-quantized) and Hugging Face transformers.

One run measures every engine on the same GGUF file with the same thread count and the same token ids,
then prints one table with the ratios LLMasOS ÷ peer next to the floors the engine must meet:

- single-stream decode tok/s (128 new tokens after a short prompt; first token to last);
- aggregate decode tok/s with 8 and 32 concurrent sequences (~32-token prompts, 128 new tokens each);
- prompt processing tok/s of a 1,024-token prompt (from time to first token);
- LLMasOS only: time to first token of 32 requests sharing a 512-token system prompt (prefix cache);
- LLMasOS only: suspend + resume of a 2,048-token context in each mode;
- LLMasOS only: batch-1 decode as a share of the measured memory-bandwidth limit;
- peak RSS of each engine.

Each engine runs in its own subprocess (this script again, with `--worker`) so that peak RSS is each
engine's own and no engine's threads, caches or allocator state colour another's numbers. The parent
only orchestrates: it fetches the model, re-quantizes it for llama.cpp, starts workers, prints.

llama.cpp is driven through llama-cpp-python's low-level API, the way a batching server drives it: one
context with `n_seq_max = B`, one `llama_batch` per step holding one token per sequence, each with its
own seq id. Its high-level `Llama` class serves one sequence at a time and would understate it.

    .venv/bin/python benchmarks/engine_vs_peers.py [--threads 2] [--quick] [--only llmasos,llamacpp]
                                                   [--requant Q8_0] [--engine-option FIELD=VALUE]
                                                   [--rounds N] [--json out.json]

Peers are optional: `benchmarks/install_peers.sh` installs llama-cpp-python; a peer that is not
installed is skipped with a note.
"""

from __future__ import annotations

import argparse
import ctypes
import dataclasses
import json
import os
import resource
import statistics
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

PEERS = ("llmasos", "llamacpp", "transformers")

# The floors (and goals) this benchmark checks: (key, text, comparison, floor, goal). Issue 3 measures
# llama.cpp "on the same GGUF file" (the *_vs_same_file ratios). The same llama.cpp floors are also checked
# against its faster file (the Q8_0 re-quantization where that is faster, *_vs_llamacpp): a different
# model, whose 8-bit activations multiply twice as fast as LLMasOS's 15-bit ones (what 8 bits cost in
# accuracy: csrc/quant_gemm.h, kActMax).
FLOORS = (
    ("single_vs_same_file", "single-stream ÷ llama.cpp", ">=", 0.75, 1.0),
    ("b32_vs_same_file", "32-concurrent ÷ llama.cpp batched", ">=", 2.0, 3.0),
    ("b32_vs_transformers", "32-concurrent ÷ transformers", ">=", 3.0, None),
    ("prefill_vs_same_file", "prefill 1024 ÷ llama.cpp", ">=", 3.0, None),
    ("shared_prefix_ratio", "shared-prefix TTFT later ÷ first", "<=", 0.25, None),
    ("swap_ms", "host-memory suspend+resume (ms)", "<=", 20.0, None),
)
FASTER_FILE_FLOORS = tuple(
    (key.replace("_vs_same_file", "_vs_llamacpp"), text, op, floor, goal)
    for key, text, op, floor, goal in FLOORS
    if key.endswith("_vs_same_file")
)

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


# ---- prompts ------------------------------------------------------------------------------------


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


SUSPEND_MODES = ("swap", "keep", "recompute")
SUSPEND_CYCLES = 5


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


# ---- traces: what one generation run recorded, and the rates derived from it --------------------


@dataclass
class Trace:
    """Timestamps of one batched generation: its start, each sequence's first token, every step."""

    start: float
    first: dict[int, float] = field(default_factory=dict)  # sequence index -> time of its first token
    steps: list[tuple[float, int]] = field(default_factory=list)  # (time, new tokens in that step)
    tokens: dict[int, list[int]] = field(default_factory=dict)  # sequence index -> output ids

    def record(self, now: float, produced: dict[int, int]) -> None:
        for index, token in produced.items():
            self.first.setdefault(index, now)
            self.tokens.setdefault(index, []).append(token)
        self.steps.append((now, len(produced)))

    @property
    def ttft(self) -> float:
        """Seconds from the start to the first token of the first sequence."""
        return min(self.first.values()) - self.start

    @property
    def decode_rate(self) -> float:
        """Tokens/s of the decode phase: tokens made after every sequence had its first token, over
        the time they took. Engines that overlap one sequence's prefill with another's decode are
        neither helped nor hurt: only steps after the last first token count."""
        begin = max(self.first.values())
        produced = sum(n for t, n in self.steps if t > begin)
        return produced / (self.steps[-1][0] - begin)


def common_prefix(a: list[int], b: list[int]) -> int:
    """How many leading greedy tokens two engines agree on (a sanity check, not a score)."""
    n = 0
    for x, y in zip(a, b, strict=False):
        if x != y:
            break
        n += 1
    return n


# ---- peers: each turns (prompts, new tokens) into a Trace -----------------------------------------


class LLMasOSPeer:
    """LLMasOS through the engine's own add/step loop, the way the kernel drives it."""

    label = "LLMasOS"

    def __init__(self, model: Path, threads: int, options: dict[str, Any], notes: list[str]) -> None:
        from llmasos.config import EngineConfig
        from llmasos.engine.engine import LLMEngine
        from llmasos.engine.sampling import SamplingParams

        self.SamplingParams = SamplingParams
        wanted = {"num_threads": threads, "enable_prefix_caching": True, **options}
        known = {f.name for f in dataclasses.fields(EngineConfig)}
        missing = [k for k in wanted if k not in known]
        if missing:
            notes.append(f"EngineConfig has no {', '.join(missing)}; ran with the engine's defaults for them")
        if options:
            notes.append("engine options: " + ", ".join(f"{k}={v!r}" for k, v in options.items()))
        self.prefix_caching = "enable_prefix_caching" in known
        self.engine = LLMEngine.from_path(
            str(model), EngineConfig(**{k: wanted[k] for k in known & set(wanted)})
        )
        self._run_id = 0

    def greedy(self, n: int) -> Any:
        return self.SamplingParams(max_tokens=n, temperature=0, ignore_eos=True)

    def run(self, prompts: list[list[int]], new_tokens: int) -> Trace:
        self._run_id += 1
        ids = {f"bench-{self._run_id}-{i}": i for i in range(len(prompts))}
        trace = Trace(time.perf_counter())
        for request_id, i in ids.items():
            self.engine.add(request_id, prompts[i], self.greedy(new_tokens))
        while any(r in self.engine.requests for r in ids):
            outputs = self.engine.step()
            trace.record(time.perf_counter(), {ids[o.request_id]: o.token_ids[-1] for o in outputs})
        return trace

    def weight_bytes(self) -> dict:
        """Bytes of weights one decode step reads, and how they were counted.

        The model's own `weight_bytes_per_token()` when it has one: quantized layers keep their
        packed weights outside the parameters (and also keep a dense copy for large steps, which a
        one-token step does not read), so only the model knows. Otherwise every parameter and buffer
        once (a tied LM head is the embedding), less the tensors a step reads one row of: the RoPE
        tables and, when the LM head is a separate tensor, the embedding table."""
        model = self.engine.runner.model
        if hasattr(model, "weight_bytes_per_token"):
            return {"bytes": model.weight_bytes_per_token(), "source": "model.weight_bytes_per_token()"}
        seen: dict[int, int] = {}
        for name, tensor in [*model.named_parameters(), *model.named_buffers()]:
            if "rope" not in name:
                seen.setdefault(tensor.data_ptr(), tensor.numel() * tensor.element_size())
        total = sum(seen.values())
        embed = getattr(model, "embed_tokens", None)
        if embed is not None and getattr(model, "lm_head", None) is not None:
            total -= sum(p.numel() * p.element_size() for p in embed.parameters())
        return {"bytes": total, "source": "parameters and buffers"}


class LlamaCppPeer:
    """llama.cpp through llama-cpp-python's low-level C API: a batching server's loop, greedy in numpy.

    A fresh context per run: it starts with an empty KV cache whatever the bindings' version calls
    its cache-clearing function, and creating one costs milliseconds (the weights stay mapped).
    """

    def __init__(self, model: Path, threads: int, label: str) -> None:
        import llama_cpp
        import numpy as np

        self.lib, self.np, self.label, self.threads = llama_cpp, np, label, threads
        _quiet_llama_cpp(llama_cpp)
        llama_cpp.llama_backend_init()
        self.model = llama_cpp.llama_model_load_from_file(
            str(model).encode(), llama_cpp.llama_model_default_params()
        )
        if not self.model:
            raise RuntimeError(f"llama.cpp could not load {model}")
        self.n_vocab = llama_cpp.llama_vocab_n_tokens(llama_cpp.llama_model_get_vocab(self.model))

    def _context(self, n_seqs: int, n_ctx: int, n_batch: int) -> Any:
        lib = self.lib
        params = lib.llama_context_default_params()
        # Pitfall: with n_seq_max > 1 the KV cache may be split evenly between sequences (the
        # non-unified cache), so n_ctx must be the total over all of them, not one sequence's length.
        params.n_ctx = -(-n_ctx // 256) * 256
        params.n_batch = n_batch  # most tokens one llama_decode call may take
        params.n_ubatch = min(512, n_batch)  # llama.cpp's default physical batch
        params.n_seq_max = n_seqs
        params.n_threads = params.n_threads_batch = self.threads
        ctx = lib.llama_init_from_model(self.model, params)
        if not ctx:
            raise RuntimeError("llama.cpp could not create a context")
        return ctx

    def _argmax(self, ctx: Any, index: int) -> int:
        # A view, not a copy, of row `index` of the batch (the index within the llama_batch, which
        # must have had logits requested): valid only until the next llama_decode.
        logits = self.np.ctypeslib.as_array(self.lib.llama_get_logits_ith(ctx, index), shape=(self.n_vocab,))
        return int(logits.argmax())

    def run(self, prompts: list[list[int]], new_tokens: int) -> Trace:
        lib = self.lib
        n_seqs, n_prompt = len(prompts), sum(len(p) for p in prompts)
        longest = max(len(p) for p in prompts)
        n_batch = max(n_prompt, n_seqs, 512)  # the whole prefill in one llama_decode call
        ctx = self._context(n_seqs, n_seqs * (longest + new_tokens), n_batch)
        # Room for every prompt token at once; each token may belong to one sequence.
        batch = lib.llama_batch_init(n_batch, 0, 1)
        try:
            trace = Trace(time.perf_counter())
            # Prefill: every prompt in one batch; logits only for each prompt's last token.
            k, last = 0, []
            for s, prompt in enumerate(prompts):
                for pos, token in enumerate(prompt):
                    self._put(batch, k, token, pos, s, pos == len(prompt) - 1)
                    k += 1
                last.append(k - 1)
            batch.n_tokens = k
            self._decode(ctx, batch)
            tokens = [self._argmax(ctx, i) for i in last]
            trace.record(time.perf_counter(), dict(enumerate(tokens)))
            # Decode: one token per sequence per step, sequence s at batch index s.
            for step in range(new_tokens - 1):
                for s, prompt in enumerate(prompts):
                    self._put(batch, s, tokens[s], len(prompt) + step, s, True)
                batch.n_tokens = n_seqs
                self._decode(ctx, batch)
                tokens = [self._argmax(ctx, s) for s in range(n_seqs)]
                trace.record(time.perf_counter(), dict(enumerate(tokens)))
            return trace
        finally:
            lib.llama_batch_free(batch)
            lib.llama_free(ctx)

    @staticmethod
    def _put(batch: Any, i: int, token: int, pos: int, seq: int, logits: bool) -> None:
        batch.token[i] = token
        batch.pos[i] = pos
        batch.n_seq_id[i] = 1
        batch.seq_id[i][0] = seq
        batch.logits[i] = logits

    def _decode(self, ctx: Any, batch: Any) -> None:
        # Non-zero is not an exception: 1 means no KV slot was found (context too small), negative an error.
        rc = self.lib.llama_decode(ctx, batch)
        if rc != 0:
            raise RuntimeError(f"llama_decode returned {rc}")


def _quiet_llama_cpp(lib: Any) -> None:
    """Silence llama.cpp's per-load and per-context logging (hundreds of lines on stderr)."""
    callback = lib.llama_log_callback(lambda level, text, user_data: None)
    _quiet_llama_cpp.keep = callback  # type: ignore[attr-defined]  # C keeps a pointer: must not be freed
    lib.llama_log_set(callback, ctypes.c_void_p())


def requantize(src: Path, dst: Path, ftype_name: str, threads: int) -> float:
    """Re-quantize a GGUF file with llama.cpp; seconds taken."""
    import llama_cpp

    _quiet_llama_cpp(llama_cpp)
    params = llama_cpp.llama_model_quantize_default_params()
    params.ftype = getattr(llama_cpp, f"LLAMA_FTYPE_MOSTLY_{ftype_name}")
    params.nthread = threads
    # Pitfall: the shipped file is already quantized (Q4_1), which llama.cpp refuses to re-quantize
    # unless told to; without this flag the call only returns a non-zero code.
    params.allow_requantize = True
    start = time.perf_counter()
    rc = llama_cpp.llama_model_quantize(str(src).encode(), str(dst).encode(), ctypes.byref(params))
    if rc != 0:
        raise RuntimeError(f"llama_model_quantize to {ftype_name} returned {rc}")
    return time.perf_counter() - start


class TransformersPeer:
    """Hugging Face transformers `generate`, fp32, batched with left padding, greedy, fixed length."""

    label = "transformers"

    def __init__(self, model: Path, threads: int) -> None:
        os.environ.setdefault("TQDM_DISABLE", "1")  # the GGUF loader draws progress bars
        import torch
        from transformers import AutoModelForCausalLM
        from transformers.utils import logging as hf_logging

        hf_logging.set_verbosity_error()
        hf_logging.disable_progress_bar()
        torch.set_num_threads(threads)
        self.torch = torch
        self.model = AutoModelForCausalLM.from_pretrained(
            str(model.parent), gguf_file=model.name, dtype=torch.float32
        ).eval()

    def run(self, prompts: list[list[int]], new_tokens: int) -> Trace:
        torch = self.torch
        longest = max(len(p) for p in prompts)
        pad = 0
        # Left padding: every row's last prompt token sits in the last column, where generate appends.
        input_ids = torch.tensor([[pad] * (longest - len(p)) + p for p in prompts])
        mask = torch.tensor([[0] * (longest - len(p)) + [1] * len(p) for p in prompts])
        trace = Trace(time.perf_counter())
        streamer = _TraceStreamer(trace)
        with torch.no_grad():
            self.model.generate(
                input_ids,
                attention_mask=mask,
                do_sample=False,
                max_new_tokens=new_tokens,
                min_new_tokens=new_tokens,
                pad_token_id=pad,
                streamer=streamer,
            )
        return trace


class _TraceStreamer:
    """A transformers streamer that timestamps each step: `put` gets the prompt first, then each
    step's new token of every row (any batch size; the library's text streamers allow only one)."""

    def __init__(self, trace: Trace) -> None:
        self.trace, self.seen_prompt = trace, False

    def put(self, value: Any) -> None:
        now = time.perf_counter()
        if not self.seen_prompt:
            self.seen_prompt = True
            return
        self.trace.record(now, dict(enumerate(value.reshape(-1).tolist())))

    def end(self) -> None:
        pass


# ---- figures --------------------------------------------------------------------------------------


def warm_up(peer: Any, prompts: dict[str, list[int]]) -> None:
    """One short batched run first: lazy allocations, thread pools and kernel choice are not timed."""
    peer.run([prompts[f"warm-{i}"] for i in range(4)], 4)


def fig_single_stream(peer: Any, prompts: dict[str, list[int]], wl: Workload) -> dict:
    """Single-stream decode tok/s: first token to last, best of `repeats`. The tokens compared between
    engines are always the first repeat's: the fastest repeat's could be another prompt's in each engine,
    and the engines then "agreed" only on the chat template's first tokens."""
    traces = [peer.run([prompts[f"single-{r}"]], wl.new_tokens) for r in range(wl.repeats)]
    best = max(traces, key=lambda t: t.decode_rate)
    return {"tok_s": best.decode_rate, "tokens": traces[0].tokens[0]}


def fig_concurrent(peer: Any, prompts: dict[str, list[int]], wl: Workload, batch_size: int) -> dict:
    """Aggregate decode tok/s of `batch_size` sequences started together (equal prompt lengths)."""
    trace = peer.run([prompts[f"b{batch_size}-{i}"] for i in range(batch_size)], wl.new_tokens)
    total = sum(len(t) for t in trace.tokens.values())
    return {
        "tok_s": trace.decode_rate,
        "end_to_end_tok_s": total / (trace.steps[-1][0] - trace.start),
        "tokens_first": trace.tokens[0],
        "tokens_last": trace.tokens[batch_size - 1],
    }


def fig_prefill(peer: Any, prompts: dict[str, list[int]], wl: Workload) -> dict:
    """Prompt processing tok/s of one long prompt: its length over the time to its first token."""
    ttft = min(peer.run([prompts[f"prefill-{r}"]], 1).ttft for r in range(wl.repeats))
    return {"tok_s": wl.prefill_len / ttft, "ttft_ms": ttft * 1e3}


def fig_shared_prefix(peer: LLMasOSPeer, prompts: dict[str, list[int]], wl: Workload) -> dict:
    """TTFT of requests sharing a long system prompt, submitted one after another.

    Each request is added and stepped until its (only) token comes back, then the next is added, so
    every later request can find the system prompt's KV blocks in the prefix cache."""
    engine = peer.engine
    ttfts, cached = [], []
    for i in range(wl.shared_requests):
        request_id = f"shared-{i}"
        start = time.perf_counter()
        engine.add(request_id, prompts[f"shared-{i}"], peer.greedy(1))
        done = None
        while done is None:
            done = next((o for o in engine.step() if o.request_id == request_id), None)
        ttfts.append(time.perf_counter() - start)
        cached.append(getattr(done, "num_cached_tokens", 0))
    first, later = ttfts[0], statistics.median(ttfts[1:])
    return {
        "first_ms": first * 1e3,
        "later_median_ms": later * 1e3,
        "ratio": later / first,
        "cached_tokens_median": statistics.median(cached[1:]),
        "prefix_caching": peer.prefix_caching,
    }


def fig_suspend(peer: LLMasOSPeer, prompts: dict[str, list[int]], notes: list[str]) -> dict:
    """Suspend and resume of a long context in each mode; our own wall time and the engine's report.

    `next_token_ms` is the step after resume: where "recompute" pays (it re-runs the prompt) and
    what "swap" costs if the copy back had to wait; `decode_step_ms` is an ordinary step before."""
    engine = peer.engine
    if not (hasattr(engine, "suspend") and hasattr(engine, "resume")):
        notes.append("engine has no suspend/resume yet: suspend figures skipped")
        return {}
    results = {}
    for mode in SUSPEND_MODES:
        request_id = f"suspend-{mode}"
        engine.add(request_id, prompts[f"ctx-{mode}"], peer.greedy(64))

        def next_output(rid: str = request_id) -> tuple[float, Any]:
            start, output = time.perf_counter(), None
            while output is None:
                output = next((o for o in engine.step() if o.request_id == rid), None)
            return time.perf_counter() - start, output

        next_output()  # prefill: the context is computed
        next_output()
        step, _ = next_output()  # an ordinary decode step, for reference
        # Several cycles, medians reported: one copy of ~100 MB is at the mercy of whatever else the
        # machine's memory is doing (single cycles of the same code read 10 ms and 28 ms).
        cycles = []
        for _ in range(SUSPEND_CYCLES):
            start = time.perf_counter()
            suspended = engine.suspend(request_id, mode)
            mid = time.perf_counter()
            resumed = engine.resume(request_id)
            end = time.perf_counter()
            after, output = next_output()
            cycles.append((mid - start, end - mid, suspended, resumed, after, output))
        cycles.sort(key=lambda c: c[0] + c[1])
        suspend_s, resume_s, suspended, resumed, after, output = cycles[len(cycles) // 2]
        engine.abort(request_id)
        results[mode] = {
            "suspend_ms": suspend_s * 1e3,
            "resume_ms": resume_s * 1e3,
            "total_ms": (suspend_s + resume_s) * 1e3,
            "total_ms_range": [(c[0] + c[1]) * 1e3 for c in (cycles[0], cycles[-1])],
            "reported_ms": (getattr(suspended, "seconds", 0) + getattr(resumed, "seconds", 0)) * 1e3,
            "bytes_moved": getattr(suspended, "bytes_moved", 0),
            "context_tokens": getattr(suspended, "num_tokens", len(prompts[f"ctx-{mode}"]) + 2),
            "next_token_ms": after * 1e3,
            # Recompute re-admits the request like a new prompt: freed blocks still in the prefix
            # cache make it cheap; this says how much of the context came back that way.
            "cached_tokens_after": getattr(output, "num_cached_tokens", 0),
            "decode_step_ms": step * 1e3,
        }
    return results


def fig_bandwidth() -> dict:
    """Memory bandwidth from this process's threads: best of 5 copies of a 1 GiB tensor (counted
    read + write, 2 GiB of traffic per copy), and best of 5 sums of it (read only)."""
    import torch

    src = torch.ones(2**28, dtype=torch.float32)  # 1 GiB
    dst = torch.empty_like(src)
    nbytes = src.numel() * src.element_size()
    dst.copy_(src)  # fault the pages in first
    copies, sums = [], []
    for _ in range(5):
        start = time.perf_counter()
        dst.copy_(src)
        copies.append(time.perf_counter() - start)
        start = time.perf_counter()
        src.sum()
        sums.append(time.perf_counter() - start)
    return {"copy_rw_gb_s": 2 * nbytes / min(copies) / 1e9, "sum_read_gb_s": nbytes / min(sums) / 1e9}


# ---- workers: one engine per process ---------------------------------------------------------------


def run_worker(
    name: str, model: Path, args: argparse.Namespace, wl: Workload, prompts: dict[str, list[int]]
) -> dict:
    """Measure one engine (or the bandwidth) in this process."""
    notes: list[str] = []
    result: dict[str, Any] = {"notes": notes}
    threads = args.threads
    start = time.perf_counter()
    if name == "bandwidth":
        import torch

        torch.set_num_threads(threads)
        result.update(fig_bandwidth())
        return result
    if name == "llmasos":
        peer: Any = LLMasOSPeer(model, threads, engine_options(args.engine_option), notes)
    elif name.startswith("llamacpp"):
        peer = LlamaCppPeer(model, threads, name)
    elif name == "transformers":
        peer = TransformersPeer(model, threads)
    else:
        raise ValueError(f"unknown worker {name!r}")
    result["load_s"] = time.perf_counter() - start
    warm_up(peer, prompts)
    figures: dict[str, Callable[[], Any]] = {"single": lambda: fig_single_stream(peer, prompts, wl)}
    for b in wl.batch_sizes:
        figures[f"b{b}"] = lambda b=b: fig_concurrent(peer, prompts, wl, b)
    figures["prefill"] = lambda: fig_prefill(peer, prompts, wl)
    if name == "llmasos":
        figures["shared_prefix"] = lambda: fig_shared_prefix(peer, prompts, wl)
        figures["suspend"] = lambda: fig_suspend(peer, prompts, notes)
        figures["weight_bytes"] = peer.weight_bytes
    for key, figure in figures.items():
        t = time.perf_counter()
        try:
            result[key] = figure()
        except Exception as exc:  # one broken figure must not lose the others
            notes.append(f"{key} failed: {type(exc).__name__}: {exc}")
        print(f"  [{name}] {key}: {time.perf_counter() - t:.1f} s", file=sys.stderr, flush=True)
    return result


def engine_options(pairs: list[str]) -> dict[str, Any]:
    """`FIELD=VALUE` strings as EngineConfig keyword arguments; values read as JSON when they parse
    (numbers, true/false), else kept as strings (weight_format=int8)."""
    options: dict[str, Any] = {}
    for pair in pairs:
        key, sep, value = pair.partition("=")
        if not sep:
            raise SystemExit(f"--engine-option wants FIELD=VALUE, got {pair!r}")
        try:
            options[key.strip()] = json.loads(value)
        except json.JSONDecodeError:
            options[key.strip()] = value
    return options


def peak_rss_bytes() -> int:
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * 1024  # kilobytes on Linux


def spawn_worker(name: str, model: Path, prompts: Path, args: argparse.Namespace) -> dict:
    """Run one worker in a fresh interpreter; its JSON result, or a note on why there is none."""
    with tempfile.NamedTemporaryFile(suffix=".json") as out:
        cmd = [sys.executable, __file__, "--worker", name, "--model", str(model), "--result", out.name]
        cmd += ["--prompts", str(prompts)]
        cmd += ["--threads", str(args.threads)] + (["--quick"] if args.quick else [])
        for option in args.engine_option:
            cmd += ["--engine-option", option]
        # Same thread count for every library's pools, whatever reads which variable.
        env = dict(os.environ, OMP_NUM_THREADS=str(args.threads), TOKENIZERS_PARALLELISM="false")
        print(f"running {name} ...", file=sys.stderr, flush=True)
        proc = subprocess.run(cmd, env=env, check=False)
        text = Path(out.name).read_text()
    if proc.returncode != 0 or not text:
        return {"notes": [f"{name}: worker exited with {proc.returncode}"]}
    return json.loads(text)


# ---- report -------------------------------------------------------------------------------------


def cpu_description() -> str:
    """The CPU's model name, core count and vector extensions: figures from different machines differ
    by far more than the floors' margins (this project's VM has been both an AVX2-only Zen 3 and a Zen 4
    with AVX-512 VNNI), so every report says which it ran on."""
    name, flags = "unknown CPU", set()
    try:
        for line in Path("/proc/cpuinfo").read_text(errors="replace").splitlines():
            key, _, value = line.partition(":")
            if key.strip() == "model name" and name == "unknown CPU":
                name = value.strip()
            elif key.strip() == "flags" and not flags:
                flags = set(value.split())
    except OSError:
        pass
    wanted = ("avx2", "avx512f", "avx512_vnni", "avx512_bf16", "amx_tile")
    extensions = ", ".join(f for f in wanted if f in flags) or "none of AVX2/AVX-512"
    return f"{name}, {os.cpu_count()} logical CPUs, {extensions}"


def installed(module: str) -> bool:
    import importlib.util

    return importlib.util.find_spec(module) is not None


def ratio(a: float | None, b: float | None) -> float | None:
    return a / b if a and b else None


def fmt(value: float | None, spec: str = ".0f") -> str:
    return "—" if value is None else format(value, spec)


def get(results: dict, name: str, *keys: str) -> float | None:
    value: Any = results.get(name, {})
    for key in keys:
        value = value.get(key) if isinstance(value, dict) else None
    return value


def summarize(results: dict, wl: Workload, same_file: str | None = None) -> dict:
    """Ratios LLMasOS ÷ peer. `same_file` names the llama.cpp worker that ran LLMasOS's own GGUF file,
    the issue's comparison, whose ratios are `*_vs_same_file`; `*_vs_llamacpp` are against llama.cpp's
    best variant, figure by figure (its faster file)."""
    llamacpp = [n for n in results if n.startswith("llamacpp")]

    def best_llamacpp(*keys: str) -> float | None:
        values = [v for n in llamacpp if (v := get(results, n, *keys))]
        return max(values) if values else None

    out: dict[str, float | None] = {
        "single_vs_llamacpp": ratio(
            get(results, "llmasos", "single", "tok_s"), best_llamacpp("single", "tok_s")
        ),
        "prefill_vs_llamacpp": ratio(
            get(results, "llmasos", "prefill", "tok_s"), best_llamacpp("prefill", "tok_s")
        ),
        "shared_prefix_ratio": get(results, "llmasos", "shared_prefix", "ratio"),
        "swap_ms": get(results, "llmasos", "suspend", "swap", "total_ms"),
    }
    for key in ("single", *(f"b{b}" for b in wl.batch_sizes), "prefill"):
        out[f"{key}_vs_same_file"] = ratio(
            get(results, "llmasos", key, "tok_s"), get(results, same_file or "", key, "tok_s")
        )
    for b in wl.batch_sizes:
        ours = get(results, "llmasos", f"b{b}", "tok_s")
        out[f"b{b}_vs_llamacpp"] = ratio(ours, best_llamacpp(f"b{b}", "tok_s"))
        out[f"b{b}_vs_transformers"] = ratio(ours, get(results, "transformers", f"b{b}", "tok_s"))
    out["single_vs_transformers"] = ratio(
        get(results, "llmasos", "single", "tok_s"), get(results, "transformers", "single", "tok_s")
    )
    out["prefill_vs_transformers"] = ratio(
        get(results, "llmasos", "prefill", "tok_s"), get(results, "transformers", "prefill", "tok_s")
    )
    single = get(results, "llmasos", "single", "tok_s")
    weights = get(results, "llmasos", "weight_bytes", "bytes")
    for kind in ("copy_rw_gb_s", "sum_read_gb_s"):
        bandwidth = get(results, "bandwidth", kind)
        out[f"roofline_{kind}"] = (
            single * weights / (bandwidth * 1e9) if single and weights and bandwidth else None
        )
    return out


def merge_rounds(values: list[Any]) -> Any:
    """The rounds' results as one: numbers by their median, notes pooled, anything else (token ids,
    ranges) from the first round that has it. One round is returned as it is."""
    present = [v for v in values if v is not None]
    if len(present) <= 1:
        return present[0] if present else None
    first = present[0]
    if isinstance(first, dict):
        keys = dict.fromkeys(k for v in present if isinstance(v, dict) for k in v)
        return {k: merge_rounds([v.get(k) for v in present if isinstance(v, dict)]) for k in keys}
    numbers = [v for v in present if isinstance(v, (int, float)) and not isinstance(v, bool)]
    if len(numbers) == len(present):
        if all(isinstance(v, int) for v in numbers):  # counts stay whole: one round's value
            return statistics.median_low(numbers)
        return statistics.median(numbers)
    if all(isinstance(v, list) and all(isinstance(x, str) for x in v) for v in present):
        return list(dict.fromkeys(x for v in present for x in v))
    return first


def ratio_medians(per_round: list[dict]) -> tuple[dict, dict]:
    """Each ratio's median over the rounds, and its (lowest, highest). A ratio is taken within one
    round, between engines that ran minutes apart, before the rounds are combined."""
    medians: dict[str, float | None] = {}
    ranges: dict[str, tuple[float, float]] = {}
    for key in dict.fromkeys(k for r in per_round for k in r):
        values = [r[key] for r in per_round if r.get(key) is not None]
        medians[key] = statistics.median(values) if values else None
        if values:
            ranges[key] = (min(values), max(values))
    return medians, ranges


def print_report(
    results: dict,
    summary: dict,
    wl: Workload,
    args: argparse.Namespace,
    spread: dict[str, tuple[float, float]] | None = None,
) -> None:
    llamacpp = sorted(n for n in results if n.startswith("llamacpp"))
    engines = [n for n in ("llmasos", *llamacpp, "transformers") if n in results]
    labels = {"llmasos": "LLMasOS", "transformers": "transformers"}
    labels.update({n: "llama.cpp " + n.split(":", 1)[1] for n in engines if n.startswith("llamacpp")})
    print(
        f"\nSmolLM2-135M-Instruct ({Path(args.model_path).name}), {args.threads} threads, "
        f"{wl.new_tokens} new tokens{' (--quick)' if args.quick else ''}"
        + (f"; medians of {args.rounds} rounds, engines alternating" if spread is not None else "")
        + f"\n{args.machine}\n"
    )
    head = f"{'figure':<28}" + "".join(f"{labels[n]:>16}" for n in engines)
    same_file = args.same_file if args.same_file in results else None
    head += f"{'÷ llama.cpp':>13}" + (f"{'÷ ' + labels[same_file].split()[-1]:>9}" if same_file else "")
    head += f"{'÷ transf.':>11}"
    print(head)
    print("-" * len(head))
    rows = [("decode B=1 tok/s", ("single", "tok_s"), "single")]
    rows += [(f"decode B={b} tok/s", (f"b{b}", "tok_s"), f"b{b}") for b in wl.batch_sizes]
    rows += [(f"prefill {wl.prefill_len} tok/s", ("prefill", "tok_s"), "prefill")]
    for title, keys, key in rows:
        line = f"{title:<28}" + "".join(f"{fmt(get(results, n, *keys)):>16}" for n in engines)
        line += f"{fmt(summary.get(f'{key}_vs_llamacpp'), '.2f'):>13}"
        if same_file:
            line += f"{fmt(summary.get(f'{key}_vs_same_file'), '.2f'):>9}"
        line += f"{fmt(summary.get(f'{key}_vs_transformers'), '.2f'):>11}"
        print(line)
    rss = {n: get(results, n, "peak_rss_bytes") for n in engines}
    print(f"{'peak RSS MB':<28}" + "".join(f"{fmt(r and r / 1e6):>16}" for r in rss.values()))
    load = {n: get(results, n, "load_s") for n in engines}
    print(f"{'load s':<28}" + "".join(f"{fmt(s, '.2f'):>16}" for s in load.values()))
    prefill = {n: get(results, n, "prefill", "ttft_ms") for n in engines}
    print(f"{'TTFT prefill ms':<28}" + "".join(f"{fmt(s):>16}" for s in prefill.values()))

    agree = []
    for n in engines[1:]:
        for fig, key in (("single", "tokens"), (f"b{wl.batch_sizes[-1]}", "tokens_first")):
            a, b = get(results, "llmasos", fig, key), get(results, n, fig, key)
            if a and b:
                agree.append(f"{labels[n]} {fig} {common_prefix(a, b)}/{len(a)}")
    if agree:
        print("\ngreedy tokens equal to LLMasOS's (leading): " + "; ".join(agree))

    shared = results.get("llmasos", {}).get("shared_prefix")
    if shared:
        print(
            f"\nshared {wl.shared_prefix_len}-token system prompt, {wl.shared_requests} requests one after "
            f"another (prefix caching {'on' if shared['prefix_caching'] else 'unavailable'}): "
            f"TTFT first {shared['first_ms']:.0f} ms, later median {shared['later_median_ms']:.0f} ms, "
            f"later÷first {shared['ratio']:.2f}, cached tokens (median) {shared['cached_tokens_median']:.0f}"
        )
    suspend = results.get("llmasos", {}).get("suspend")
    if suspend:
        sizes = sorted({r["context_tokens"] for r in suspend.values()})  # each mode's own prompt and cycle
        tokens = f"{sizes[0]}" if len(sizes) == 1 else f"{sizes[0]}-{sizes[-1]}"
        print(
            f"\nsuspend + resume of a {tokens}-token context (ms, median of {SUSPEND_CYCLES} cycles; "
            "engine's own report in brackets, fastest-slowest cycle after):"
        )
        for mode, r in suspend.items():
            low, high = r.get("total_ms_range", (r["total_ms"], r["total_ms"]))
            print(
                f"  {mode:<10} suspend {r['suspend_ms']:7.2f}  resume {r['resume_ms']:7.2f}  "
                f"total {r['total_ms']:7.2f} [{r['reported_ms']:.2f}] ({low:.2f}-{high:.2f})  "
                f"moved {r['bytes_moved'] / 1e6:6.1f} MB"
            )
            line = f"  {'':<10} next token {r['next_token_ms']:.1f} (an ordinary decode step "
            line += f"{r['decode_step_ms']:.1f}"
            if mode == "recompute":
                # The prefix cache keeps whole blocks only: the step re-runs the context past the last
                # one, a tail that grows by a token each cycle, so this figure moves with the cycle.
                cached, context = r["cached_tokens_after"], r["context_tokens"]
                line += f"; {cached} of {context} context tokens from the prefix cache"
                line += f", {context + 1 - cached} computed"
            print(line + ")")
    bw = results.get("bandwidth", {})
    weights = get(results, "llmasos", "weight_bytes", "bytes")
    source = get(results, "llmasos", "weight_bytes", "source")
    if bw.get("copy_rw_gb_s") and weights:
        print(
            f"\nmemory bandwidth ({args.threads} threads): copy {bw['copy_rw_gb_s']:.1f} GB/s counted "
            f"read+write, sum {bw['sum_read_gb_s']:.1f} GB/s read only; "
            f"LLMasOS weights read per token {weights / 1e6:.0f} MB (from {source})"
        )
        print(
            f"batch-1 decode at {fmt(100 * (summary['roofline_copy_rw_gb_s'] or 0), '.1f')}% of the copy "
            f"(read+write) bandwidth limit, {fmt(100 * (summary['roofline_sum_read_gb_s'] or 0), '.1f')}% "
            f"of the read-only limit"
        )

    same = labels[same_file].split()[-1] if same_file else "the same file"
    print(f"\nfloors (goal), llama.cpp on the same GGUF file ({same}), as issue 3 measures it:")
    print_verdicts(FLOORS, summary, spread)
    print("the llama.cpp floors against its faster file (whichever file ran faster, figure by figure):")
    print_verdicts(FASTER_FILE_FLOORS, summary, spread)

    notes = [f"{n}: {note}" for n, r in results.items() for note in r.get("notes", [])]
    notes += args.notes
    if notes:
        print("\nnotes:")
        for note in notes:
            print(f"  - {note}")


def print_verdicts(floors: tuple, summary: dict, spread: dict[str, tuple[float, float]] | None) -> None:
    for key, text, op, floor, goal in floors:
        value = summary.get(key)
        if value is None:
            verdict = "not measured"
        else:
            ok = value >= floor if op == ">=" else value <= floor
            verdict = "PASS" if ok else "FAIL"
        target = f"{op} {floor:g}" + (f" (goal {goal:g})" if goal else "")
        line = f"  {text:<38} {fmt(value, '.2f'):>8}   {target:<20} {verdict}"
        if spread is not None and key in spread:
            line += f"   (rounds {spread[key][0]:.2f}-{spread[key][1]:.2f})"
        print(line)


# ---- main ---------------------------------------------------------------------------------------


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--threads", type=int, default=2, help="threads for every engine (default 2)")
    parser.add_argument("--quick", action="store_true", help="fewer tokens and requests: a smoke run")
    parser.add_argument(
        "--only", default=",".join(PEERS), help=f"comma-separated subset of {', '.join(PEERS)}"
    )
    parser.add_argument(
        "--requant",
        default="Q8_0",
        help="comma-separated llama.cpp re-quantizations to compare besides the shipped file "
        "(e.g. Q8_0,BF16,F16; empty for none)",
    )
    parser.add_argument(
        "--engine-option",
        action="append",
        default=[],
        metavar="FIELD=VALUE",
        help="an EngineConfig field for LLMasOS, e.g. weight_format=int8 (repeatable; default: the "
        "engine's defaults, with prefix caching on)",
    )
    parser.add_argument(
        "--rounds",
        type=int,
        default=1,
        help="run every engine this many times, engines alternating, and report each figure's median "
        "and each ratio's median and range over the rounds (a round takes ~4 minutes)",
    )
    parser.add_argument("--json", type=Path, help="write every measurement and ratio to this file")
    # Internal: one engine in this process (the parent starts these).
    parser.add_argument("--worker", help=argparse.SUPPRESS)
    parser.add_argument("--model", type=Path, help=argparse.SUPPRESS)
    parser.add_argument("--result", type=Path, help=argparse.SUPPRESS)
    parser.add_argument("--prompts", type=Path, help=argparse.SUPPRESS)
    return parser.parse_args(argv)


def main(argv: list[str] | None = None) -> None:
    args = parse_args(argv)
    if args.rounds < 1:
        raise SystemExit(f"--rounds wants a positive number of rounds, got {args.rounds}")
    wl = Workload.quick() if args.quick else Workload()
    if args.worker:
        prompts = json.loads(args.prompts.read_text())
        result = run_worker(args.worker, args.model, args, wl, prompts)
        result["peak_rss_bytes"] = peak_rss_bytes()
        args.result.write_text(json.dumps(result))
        return

    from llmasos.library.store import ModelStore
    from llmasos.model.tokenizer import Tokenizer

    store = ModelStore()
    store.pull("default", progress=False)  # a no-op when the model is already stored
    model = store.model_path("default")
    args.model_path, args.notes, args.machine = str(model), [], cpu_description()
    args.same_file = None  # the llama.cpp worker on LLMasOS's own file, once one is started
    engine_options(args.engine_option)  # a malformed option fails now, not after the peers ran
    only = [p.strip() for p in args.only.split(",") if p.strip()]
    unknown = set(only) - set(PEERS)
    if unknown:
        raise SystemExit(f"--only: unknown {', '.join(sorted(unknown))}; choose from {', '.join(PEERS)}")

    rounds: list[dict[str, dict]] = []
    load_before = os.getloadavg()[0]
    with tempfile.TemporaryDirectory(prefix="llmasos-peers-") as tmp:
        prompts = Path(tmp) / "prompts.json"
        prompts.write_text(json.dumps(build_prompts(Tokenizer.from_gguf(model), wl)))
        workers: list[tuple[str, Path]] = []
        if "llmasos" in only:
            workers += [("llmasos", model), ("bandwidth", model)]
            # Built now if this environment has no build yet (~1 min, once), so that the workers' load
            # times are loads, not a compile: one such round made a 2-round median 42.6 s, not ~4.
            from llmasos.model.native import cpu_kernels, kernel_isa

            kernels = cpu_kernels()
            isa = kernel_isa() if kernels is not None else "off (torch paths)"
            args.machine += f"; LLMasOS kernels: {isa}"
        if "llamacpp" in only:
            if installed("llama_cpp"):
                shipped = model.stem.rsplit(".", 1)[-1] if "." in model.stem else "as shipped"
                workers.append((f"llamacpp:{shipped}", model))
                args.same_file = f"llamacpp:{shipped}"
                for ftype in filter(None, (f.strip().upper() for f in args.requant.split(","))):
                    dst = Path(tmp) / f"{model.stem}.{ftype}.gguf"
                    try:
                        seconds = requantize(model, dst, ftype, args.threads)
                    except (RuntimeError, AttributeError) as exc:
                        args.notes.append(f"llama.cpp re-quantization to {ftype} failed: {exc}")
                        continue
                    args.notes.append(
                        f"re-quantized to {ftype} in {seconds:.2f} s ({dst.stat().st_size / 1e6:.0f} MB)"
                    )
                    workers.append((f"llamacpp:{ftype}", dst))
            else:
                args.notes.append(
                    "llama.cpp skipped: llama-cpp-python not installed (benchmarks/install_peers.sh)"
                )
        if "transformers" in only:
            if installed("transformers") and installed("accelerate"):
                workers.append(("transformers", model))
            else:
                args.notes.append("transformers skipped: transformers and accelerate not installed")
        # Engines alternate within each round, so a slow spell of this machine (timings here moved by
        # up to 25% between back-to-back runs) lands on every engine of a round, not on one engine.
        for number in range(args.rounds):
            if args.rounds > 1:
                print(f"round {number + 1} of {args.rounds}", file=sys.stderr, flush=True)
            rounds.append({name: spawn_worker(name, path, prompts, args) for name, path in workers})

    # Other work on the cores wrecks these figures, llama.cpp's most: its threads spin at barriers,
    # and one preempted thread stalls the rest (batched decode fell tenfold with a build running).
    # A rough check: the load average after the run includes our own workers' threads.
    load_after = os.getloadavg()[0]
    if load_before > 0.5 or load_after > args.threads + 0.5:
        args.notes.append(
            f"the machine was busy (1-minute load average {load_before:.1f} before, {load_after:.1f} after); "
            "rerun on an idle machine before trusting these numbers"
        )
    results = merge_rounds(rounds)
    per_round = [summarize(r, wl, args.same_file) for r in rounds]
    summary, spread = ratio_medians(per_round)
    print_report(results, summary, wl, args, spread if args.rounds > 1 else None)
    if args.json:
        args.json.write_text(
            json.dumps(
                {
                    "workload": dataclasses.asdict(wl),
                    "threads": args.threads,
                    "machine": args.machine,
                    "results": results,
                    "ratios": summary,
                    "ratio_ranges": spread,
                    "rounds": rounds,
                    "ratios_per_round": per_round,
                    "notes": args.notes,
                },
                indent=1,
            )
        )


if __name__ == "__main__":
    main()
