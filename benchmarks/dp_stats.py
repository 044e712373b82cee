"""How far `/os/stats`'s private figures are from the truth: median relative error of the released
requests, tokens and service calls at a given epsilon, for app-days with at least 1,000 requests.

    PYTHONPATH=. .venv/bin/python benchmarks/dp_stats.py [--epsilon 1] [--apps 20] [--days 30] [--trials 20]
        [--min-requests 1000] [--max-requests 20000]

Synthetic usage (seeded): each app-day gets 1,000 to 20,000 requests (the defaults) of 50 to 800
tokens each, and a service call for one request in ten; the figures go through the same `release`
the server uses (kernel/private_stats.py: OpenDP discrete Laplace, epsilon split over the three
measures, tokens clamped per request). Prints the median and 95th percentile relative error per
measure, and the time one release of apps x days cells takes.
"""

from __future__ import annotations

import argparse
import json
import random
import statistics
import time

from llmasos.kernel.private_stats import TOKEN_CLAMP, Cell, release


def synthetic(apps: int, days: int, low: int, high: int, rng: random.Random) -> dict[str, dict[Cell, int]]:
    figures: dict[str, dict[Cell, int]] = {"requests": {}, "tokens": {}, "services": {}}
    for a in range(apps):
        for d in range(days):
            cell = Cell(f"app{a}", f"day{d}")
            requests = rng.randint(low, high)
            figures["requests"][cell] = requests
            figures["tokens"][cell] = sum(min(rng.randint(50, 800), TOKEN_CLAMP) for _ in range(requests))
            figures["services"][cell] = requests // 10
    return figures


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--epsilon", type=float, default=1.0)
    parser.add_argument("--apps", type=int, default=20)
    parser.add_argument("--days", type=int, default=30)
    parser.add_argument("--trials", type=int, default=20)
    parser.add_argument("--seed", type=int, default=7)
    parser.add_argument("--min-requests", type=int, default=1000)
    parser.add_argument("--max-requests", type=int, default=20000)
    args = parser.parse_args()
    truth = synthetic(args.apps, args.days, args.min_requests, args.max_requests, random.Random(args.seed))
    errors: dict[str, list[float]] = {m: [] for m in truth}
    seconds = []
    for _ in range(args.trials):
        start = time.perf_counter()
        noisy = release(truth, args.epsilon)
        seconds.append(time.perf_counter() - start)
        for measure, values in truth.items():
            errors[measure] += [abs(noisy[measure][c] - v) / v for c, v in values.items() if v]
    result = {
        "epsilon": args.epsilon,
        "cells": args.apps * args.days,
        "trials": args.trials,
        "median_relative_error": {m: statistics.median(e) for m, e in errors.items()},
        "p95_relative_error": {m: statistics.quantiles(e, n=20)[-1] for m, e in errors.items()},
        "release_ms": statistics.median(seconds) * 1000,
    }
    for measure in truth:
        print(
            f"{measure:9} median relative error {result['median_relative_error'][measure]:.2e}, "
            f"p95 {result['p95_relative_error'][measure]:.2e}"
        )
    print(f"one release of {result['cells']} cells: {result['release_ms']:.1f} ms (epsilon {args.epsilon})")
    print(json.dumps(result))


if __name__ == "__main__":
    main()
