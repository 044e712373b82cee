"""The C++ CPU kernels against torch's, per layer shape, and the engine with and without them.

Kernels: for each projection shape of SmolLM2-135M and each step size, the C++ int4 kernel
(`q4_linear`), torch's `_weight_int4pack_mm_for_cpu` (what the engine used before) and a float32
GEMM on the dequantized weights, each over 30 distinct weights so they stream from memory as in a
real forward pass. Engine: batch-B decode tok/s of two engines on the same GGUF file, one with the
kernels and one with LLMASOS_NATIVE=0 (the torch paths).

Every measurement rotates through the variants round after round and reports medians, so load from
other processes on a shared machine hits all of them alike. Compare within one run only.

    python benchmarks/cpu_kernels.py [--threads 2] [--rounds 5] [--engine] [--batches 1,8,32]
"""

from __future__ import annotations

import argparse
import os
import statistics
import time
from collections.abc import Callable
from pathlib import Path

import torch

DEFAULT_PATH = Path(".cache/test-models/SmolLM2-135M-Instruct.Q4_1.gguf")
# (out, in) of SmolLM2-135M's fused projections: qkv, o, gate_up, down.
SHAPES = [(960, 576), (576, 576), (3072, 576), (576, 1536)]
STEP_SIZES = [1, 4, 8, 16, 32]
COPIES = 30


def _median_seconds(fns: dict[str, Callable[[], object]], rounds: int) -> dict[str, float]:
    times: dict[str, list[float]] = {name: [] for name in fns}
    for _ in range(rounds):
        for name, fn in fns.items():
            start = time.perf_counter()
            fn()
            times[name].append(time.perf_counter() - start)
    return {name: statistics.median(ts) for name, ts in times.items()}


def bench_kernels(rounds: int) -> None:
    from llmasos.model.native import cpu_kernels
    from llmasos.model.quant_linear import Int4Linear

    kernels = cpu_kernels()
    if kernels is None:
        print("C++ kernels unavailable: nothing to compare")
        return
    print(f"{'shape':>12} {'n':>3} {'C++ int4':>10} {'torch int4':>11} {'fp32':>9}  (ms per layer; C++ GB/s)")
    for out_f, in_f in SHAPES:
        layers = [Int4Linear(torch.randn(out_f, in_f) * 0.05, None, 8) for _ in range(COPIES)]
        packed = [
            (torch.ops.aten._convert_weight_to_int4pack_for_cpu(_q(la), 2), _scales_and_zeros(la))
            for la in layers
        ]
        for n in STEP_SIZES:
            seconds = _median_seconds(_variants(kernels, layers, packed, n), rounds)
            t = {name: s / COPIES for name, s in seconds.items()}
            gbs = layers[0].quant_bytes() / t["cpp"] / 1e9
            print(
                f"{out_f:>5}x{in_f:<6} {n:>3} {t['cpp'] * 1e3:>10.3f} {t['torch'] * 1e3:>11.3f} "
                f"{t['fp32'] * 1e3:>9.3f}  {gbs:5.1f}"
            )


def _variants(kernels, layers: list, packed: list, n: int) -> dict[str, Callable[[], object]]:
    from llmasos.model.block_layout import INT4_GROUP

    x = torch.randn(n, layers[0].in_features)
    xb = x.bfloat16()
    return {
        "cpp": lambda: [kernels.q4_linear(x, la.qs, la.k, la.c, la.row_scale, None) for la in layers],
        "torch": lambda: [
            torch.ops.aten._weight_int4pack_mm_for_cpu(xb, qp, INT4_GROUP, sz) for qp, sz in packed
        ],
        "fp32": lambda: [x @ la.dense.t() for la in layers],
    }


def _scales_and_zeros(layer) -> torch.Tensor:
    """torch's int4 constants (in/32, out, 2) bf16 for the layer's groups: scale d, and the value of q = 8."""
    _, k, c = layer.integer_weights()
    d = k.float() * layer.row_scale[:, None]
    m = c.float() * layer.row_scale[:, None]
    return torch.stack([d.bfloat16().t(), (m + 8 * d).bfloat16().t()], dim=-1).contiguous()


def _q(layer) -> torch.Tensor:
    """The 4-bit values (out, in) int32 back from the C++ layout."""
    return layer.integer_weights()[0].to(torch.int32)


def bench_engine(path: Path, threads: int, batches: list[int], rounds: int) -> None:
    from llmasos.config import EngineConfig
    from llmasos.engine.engine import LLMEngine
    from llmasos.engine.sampling import SamplingParams

    config = EngineConfig(num_threads=threads, enable_prefix_caching=False, max_num_batched_tokens=2048)
    engines = {}
    for name, flag in (("torch", "0"), ("C++", "1")):
        os.environ["LLMASOS_NATIVE"] = flag  # read when the engine converts its weights
        engines[name] = LLMEngine.from_path(str(path), config)
    os.environ.pop("LLMASOS_NATIVE")
    text = "The history of computing is a story of layers: hardware, operating systems, languages. "
    ids = engines["C++"].tokenizer.encode(text * 4)

    def decode_rate(engine: LLMEngine, batch: int) -> float:
        prompts = [[1000 + i, *ids[:15]] for i in range(batch)]

        def run(new: int) -> float:
            params = SamplingParams(max_tokens=new, temperature=0, ignore_eos=True)
            start = time.perf_counter()
            engine.generate(prompts, params)
            return time.perf_counter() - start

        return batch * 32 / (run(34) - run(2))  # prompt and first token cancel out

    for batch in batches:
        rates: dict[str, list[float]] = {name: [] for name in engines}
        for _ in range(rounds):
            for name, engine in engines.items():
                rates[name].append(decode_rate(engine, batch))
        med = {name: statistics.median(r) for name, r in rates.items()}
        print(
            f"batch {batch:>2} decode, {threads} threads: torch {med['torch']:6.1f} tok/s, "
            f"C++ {med['C++']:6.1f} tok/s ({med['C++'] / med['torch']:.2f}x)"
        )


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--rounds", type=int, default=5)
    parser.add_argument("--engine", action="store_true", help="also compare whole engines (real model)")
    parser.add_argument("--batches", default="1,8,32")
    parser.add_argument("--path", type=Path, default=DEFAULT_PATH)
    args = parser.parse_args()
    torch.set_num_threads(args.threads)
    bench_kernels(args.rounds)
    if args.engine:
        bench_engine(args.path, args.threads, [int(b) for b in args.batches.split(",")], args.rounds)


if __name__ == "__main__":
    main()
