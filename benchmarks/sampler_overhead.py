"""What each sampling feature costs the sampler per decode step, on a vocabulary of SmolLM2's size.

    .venv/bin/python benchmarks/sampler_overhead.py [--batch 8] [--repeats 30]

A batch whose rows use none of penalties, logit_bias or logprobs takes the path it always took (no
copy of the logits); each feature is a batch op paid only by batches that use it. Prints the median
milliseconds of one sampler call per case, greedy rows (the draw itself is then an argmax), beside
the plain case measured in the same run.
"""

from __future__ import annotations

import argparse
import statistics
import time

import torch

from llmasos.engine.sampling import Sampler, SamplingParams, SamplingState

VOCAB = 49_152
CASES = {
    "plain (greedy)": {},
    "presence+frequency": {"presence_penalty": 0.5, "frequency_penalty": 0.5},
    "repetition_penalty": {"repetition_penalty": 1.1},
    "logit_bias (10 ids)": {"logit_bias": {i: 1.0 for i in range(10)}},
    "logprobs (top 5)": {"logprobs": 5},
}


def median_ms(call, repeats: int) -> float:
    for _ in range(3):
        call()
    times = []
    for _ in range(repeats):
        start = time.perf_counter()
        call()
        times.append(time.perf_counter() - start)
    return statistics.median(times) * 1e3


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--batch", type=int, default=8)
    parser.add_argument("--repeats", type=int, default=30)
    parser.add_argument("--threads", type=int, default=2)
    args = parser.parse_args()
    torch.set_num_threads(args.threads)
    logits = torch.randn(args.batch, VOCAB, generator=torch.Generator().manual_seed(0))
    context = [list(range(row, row + 300)) for row in range(args.batch)]
    outputs = [ids[-64:] for ids in context]
    sampler = Sampler()
    plain = None
    print(f"sampler, B={args.batch}, vocab {VOCAB}, {args.threads} threads, median of {args.repeats}")
    for name, fields in CASES.items():
        params = SamplingParams(temperature=0, **fields)
        states = [SamplingState.create(params, torch.device("cpu")) for _ in range(args.batch)]
        ms = median_ms(lambda s=states: sampler(logits, s, context, outputs), args.repeats)
        plain = plain or ms
        print(f"  {name:22s} {ms:8.3f} ms  ({ms / plain:4.1f}x plain)")


if __name__ == "__main__":
    main()
