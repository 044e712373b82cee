"""The engine's milliseconds per decode step at small batches: B sequences decoding greedily together.

For each B, B prompts of 30 tokens are admitted and prefilled, then every step until they finish (48 new
tokens each) is timed: wall time, and the calling thread's CPU time (time.thread_time). With --threads 1
the kernels run on the calling thread, so its CPU time is the step's whole compute and other processes on
a shared machine slow it far less than the wall time (they still evict caches). Prints the median over
the steps of all rounds. Compare two builds (say a branch and its base) by running this once with each,
alternately, under the same load.

    python benchmarks/decode_step_ms.py [--model NAME_OR_GGUF] [--batches 1,2,3,4,8] [--threads 1]
"""

from __future__ import annotations

import argparse
import statistics
import time

import torch
from decode_paths import prompt
from step_gemms import model_file

from llmasos.config import EngineConfig
from llmasos.engine.engine import LLMEngine
from llmasos.engine.sampling import SamplingParams


def step_times(engine: LLMEngine, batch: int, rounds: int, salt: int) -> tuple[list[float], list[float]]:
    """(wall, CPU) seconds of each decode step of `rounds` batches of `batch` sequences."""
    wall, cpu = [], []
    params = SamplingParams(max_tokens=48, temperature=0.0, ignore_eos=True)
    for r in range(rounds):
        for i in range(batch):
            engine.add(f"b{batch}-{r}-{i}", prompt(engine, 30, salt + 50 * r + i), params)
        engine.step()  # the prompts' prefill
        while engine.has_unfinished_requests:
            start_wall, start_cpu = time.perf_counter(), time.thread_time()
            engine.step()
            wall.append(time.perf_counter() - start_wall)
            cpu.append(time.thread_time() - start_cpu)
    return wall, cpu


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--model", default="default", help="a library model's name or a .gguf path")
    parser.add_argument("--batches", default="1,2,3,4,8", help="comma-separated sequences per step")
    parser.add_argument("--threads", type=int, default=1)
    parser.add_argument("--rounds", type=int, default=3)
    args = parser.parse_args()
    torch.set_num_threads(args.threads)
    engine = LLMEngine.from_path(str(model_file(args.model)), EngineConfig(num_threads=args.threads))
    step_times(engine, 1, 1, 7)  # warm-up: the kernels' buffers, the first allocations
    for batch in (int(b) for b in args.batches.split(",")):
        wall, cpu = step_times(engine, batch, args.rounds, 300 + 10 * batch)
        print(
            f"B={batch}: {statistics.median(wall) * 1e3:6.2f} ms/step wall, "
            f"{statistics.median(cpu) * 1e3:6.2f} ms/step CPU of the calling thread ({len(wall)} steps)",
            flush=True,
        )


if __name__ == "__main__":
    main()
