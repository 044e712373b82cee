"""What a token costs the engine by the length of the context it attends to: the basis of the kernel's
charge for computed work (llmasos/engine/work_cost.py).

    python benchmarks/context_cost.py [--model NAME_OR_GGUF] [--contexts 256,1024,2048] [--rounds 3]

On one thread (so the calling thread's CPU time is the step's whole compute, and other work on a shared
machine moves it little), measures:
- a decode step of 2 short sequences (30-token prompts), and of 4: the marginal cost of a short decode
  token (half the difference), the unit of the charge;
- the same 2 beside one sequence decoding at each context length: the marginal cost of its token, and so
  the cost of each position of context it reads (a straight line through the lengths);
- one prompt of each length prefilled in a single step: a prefill token's cost by its position.
Prints each figure in milliseconds and in units of a short decode token, with the model's own figure
for the charge (`WorkCost.for_model`) beside the measured one.
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
from llmasos.engine.work_cost import WorkCost

#: Decode steps timed per batch, after the batch's prefill and a few settling steps.
TIMED_STEPS = 12


def decode_ms(engine: LLMEngine, short: int, context: int, salt: int) -> float:
    """Median CPU ms of a decode step of `short` 30-token sequences and, if `context`, one more whose
    prompt is `context` tokens long."""
    params = SamplingParams(max_tokens=TIMED_STEPS + 4, temperature=0.0, ignore_eos=True)
    for i in range(short):
        engine.add(f"s{salt}-{i}", prompt(engine, 30, salt + i), params)
    if context:
        engine.add(f"l{salt}", prompt(engine, context, salt + 100), params)
    for _ in range(3):  # the prefill, and the first steps
        engine.step()
    times = []
    while engine.has_unfinished_requests:
        started = time.thread_time()
        engine.step()
        times.append(time.thread_time() - started)
    return statistics.median(times) * 1000


def prefill_ms(engine: LLMEngine, length: int, salt: int) -> float:
    """CPU ms of prefilling one prompt of `length` tokens in one step."""
    engine.add(f"p{salt}", prompt(engine, length, salt), SamplingParams(max_tokens=1, temperature=0.0))
    started = time.thread_time()
    engine.step()
    took = time.thread_time() - started
    while engine.has_unfinished_requests:
        engine.step()
    return took * 1000


def median_of(rounds: int, measure) -> float:
    return statistics.median(measure(r) for r in range(rounds))


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--model", default="default", help="a library model's name or a .gguf path")
    parser.add_argument("--contexts", default="256,1024,2048", help="comma-separated context lengths")
    parser.add_argument("--rounds", type=int, default=3)
    args = parser.parse_args()
    contexts = [int(c) for c in args.contexts.split(",")]
    torch.set_num_threads(1)
    config = EngineConfig(num_threads=1, max_num_batched_tokens=max(contexts) + 64)
    engine = LLMEngine.from_path(str(model_file(args.model)), config)
    rounds = args.rounds

    two = median_of(rounds, lambda r: decode_ms(engine, 2, 0, 1000 + 10 * r))
    four = median_of(rounds, lambda r: decode_ms(engine, 4, 0, 2000 + 10 * r))
    unit = (four - two) / 2  # over two tokens: the difference of two noisy steps, halved
    print(f"decode step, 2 short sequences: {two:.2f} ms; 4: {four:.2f} ms; a short token: {unit:.2f} ms")
    multiples = []  # (context, its decode token's cost in short tokens)
    for context in contexts:
        beside = median_of(rounds, lambda r, c=context: decode_ms(engine, 2, c, 3000 + c + 10 * r))
        multiples.append((context, (beside - two) / unit))
        cost = multiples[-1][1]
        print(
            f"  one more at context {context}: {beside:.2f} ms, its token {beside - two:.2f} ms = "
            f"{cost:.1f} short tokens"
        )
    model = WorkCost.for_model(engine.runner.model_config)
    # max(1, p / positions): the fit through the contexts whose token cost more than a short one
    fitted = [context / multiple for context, multiple in multiples if multiple > 1.5]
    decode_positions = statistics.median(fitted) if fitted else float("inf")
    print(
        f"decode: a token costs a pass through the weights every {decode_positions:.0f} positions of context "
        f"(the charge's figure for this model: {model.decode_positions:.0f}); its charge at "
        + ", ".join(f"{c}: {model.decode(c):.1f}" for c in contexts)
    )
    per_token = []  # (length, a prefill token's cost in short tokens)
    for length in contexts:
        took = median_of(rounds, lambda r, n=length: prefill_ms(engine, n, 5000 + n + 10 * r))
        per_token.append((length, took / unit / length))
        print(
            f"prefill of {length} tokens: {took:.1f} ms ({took / length:.2f} ms a token) = "
            f"{took / unit:.0f} short tokens; "
            f"the charge: {model.prefill(0, length):.0f}"
        )
    (short_n, short_cost), (long_n, long_cost) = per_token[0], per_token[-1]
    slope = (long_cost - short_cost) / ((long_n - short_n) / 2)  # per position, at the mean position n/2
    prefill_positions = 1 / slope if slope > 0 else float("inf")
    print(
        f"prefill: a token costs {short_cost - slope * short_n / 2:.2f} short tokens plus one every "
        f"{prefill_positions:.0f} positions (the charge's figures: 1 plus one every "
        f"{model.prefill_positions:.0f})"
    )


if __name__ == "__main__":
    main()
