"""Where a batched decode step's GEMM time goes: each projection kind of a model, in CPU time per core.

For every layer's qkv, o, gate_up and down projection (grouped by name, format and shape) and the LM head,
the C++ kernel runs at each step size on one thread; the best of a few calls is timed in the thread's CPU
time (time.thread_time), so other processes on a shared machine slow the figures far less than wall time
(they still evict caches). Each line gives the milliseconds summed over the layers, the share of the
step's GEMM time and the GOP/s per core (2 x n x in x out operations).

Compare GOP/s with the core's int16 peak: the kernels multiply 15-bit activations by int16 weights with
vpdpwssd (32 multiply-adds per 512-bit instruction). On the 2-core Ice Lake server (Xeon, AVX-512 VNNI)
of 2026-12-07, a standalone loop of 12 independent vpdpwssd chains ran 4.44 G instructions per CPU-second:
142 G multiply-adds, 284 GOP/s per core, 568 GOP/s for both (vpdpbusd, int8, twice that; the kernels do
not use it: 8-bit activations moved the logits 25x as far, quant_gemm.h). Per accumulator, a run of 8
input pairs also takes a conversion and a float add (the bit-exact run sums), so ~80% of that peak is the
ceiling of this format.

    python benchmarks/step_gemms.py [--model NAME_OR_GGUF] [--steps 1,8,32] [--calls 3]
"""

from __future__ import annotations

import argparse
import collections
import time
from pathlib import Path

import torch

PROJECTIONS = ("qkv_proj", "o_proj", "gate_up_proj", "down_proj")


def model_file(name: str) -> Path:
    """A .gguf path as given, or a library model's file (pulled if missing)."""
    path = Path(name).expanduser()
    if path.is_file():
        return path
    from llmasos.library.store import ModelStore

    store = ModelStore()
    store.pull(name, progress=False)
    return store.model_path(name)


def kernel_call(kernels, parts: list[torch.Tensor]):  # -> (in_features, format, fn(x))
    """The projection's kernel as a function of x, told apart as linear_view does (quant_gemm.h)."""
    q, second, third, row_scale, bias = parts
    if q.dtype == torch.int8:  # 8-bit groups: (out/16, in/2, 32)
        return q.shape[1] * 2, "q8g", lambda x: kernels.q8g_linear(x, q, second, third, bias)
    if second.dtype == torch.int8:  # Q6_K at 6 bits: (out/16, in/8, 96)
        return q.shape[1] * 8, "q6k", lambda x: kernels.q6k_linear(x, q, second, third, bias)
    return q.shape[1] * 32, "q4", lambda x: kernels.q4_linear(x, q, second, third, row_scale, bias)


def best_cpu_seconds(fn, x: torch.Tensor, calls: int) -> float:
    fn(x)  # the first call sizes the thread's buffers
    best = float("inf")
    for _ in range(calls):
        start = time.thread_time()
        fn(x)
        best = min(best, time.thread_time() - start)
    return best


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--model", default="default", help="a library model's name or a .gguf path")
    parser.add_argument("--steps", default="1,8,32", help="comma-separated tokens per step")
    parser.add_argument("--calls", type=int, default=3, help="calls per projection; the best is kept")
    args = parser.parse_args()
    from llmasos.config import EngineConfig
    from llmasos.engine.engine import LLMEngine

    torch.set_num_threads(1)
    model = LLMEngine.from_path(str(model_file(args.model)), EngineConfig(num_threads=1)).runner.model
    kernels = getattr(model, "native_kernels", None)
    if kernels is None:
        raise SystemExit("the C++ forward step is not in use for this model: nothing to measure")
    named = [(name, getattr(layer, name).native_tensors()) for layer in model.layers for name in PROJECTIONS]
    head = getattr(model, "logits_proj", None)
    if head is not None and hasattr(head, "native_tensors") and len(head.native_tensors()) == 5:
        named.append(("head", head.native_tensors()))
    for n in (int(s) for s in args.steps.split(",")):
        seconds: dict[str, float] = collections.defaultdict(float)
        ops: dict[str, float] = collections.defaultdict(float)
        for name, parts in named:
            in_features, fmt, fn = kernel_call(kernels, parts)
            x = torch.randn(n, in_features)
            out_features = fn(x).shape[1]
            key = f"{name} {fmt} {out_features}x{in_features}"
            seconds[key] += best_cpu_seconds(fn, x, args.calls)
            ops[key] += 2 * n * in_features * out_features
        total = sum(seconds.values())
        print(f"\n{n} tokens a step: {total * 1e3:.1f} ms of one core's CPU time in the GEMMs")
        for key in sorted(seconds, key=seconds.get, reverse=True):
            share = seconds[key] / total
            rate = ops[key] / seconds[key] / 1e9
            print(f"  {key:34s} {seconds[key] * 1e3:8.1f} ms  {share:5.1%}  {rate:6.1f} GOP/s per core")


if __name__ == "__main__":
    main()
