"""The figures: each measures one thing of one engine (or of the machine) and returns it as a dict."""

from __future__ import annotations

import statistics
import time
from typing import Any

from .engines import LLMasOSPeer
from .workload import SUSPEND_CYCLES, SUSPEND_MODES, Workload


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
