"""Turning the workers' results into ratios LLMasOS ÷ peer, and rounds into one result."""

from __future__ import annotations

import statistics
from typing import Any

from .workload import Workload


def ratio(a: float | None, b: float | None) -> float | None:
    return a / b if a and b else None


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
    # Costs, not speeds: lower is better (issue 23's goals: load <= 2x, peak RSS <= 1.3x the same file's).
    costs = ("load_s", "load_cold_s", "ready_s", "peak_rss_bytes", "peak_rss_common_bytes")
    costs += ("rss_after_load_bytes",)
    for key in costs:
        out[f"{key}_vs_same_file"] = ratio(get(results, "llmasos", key), get(results, same_file or "", key))
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


# The figures whose range over the rounds the table prints beside their median: (result keys).
RANGED = (
    *((figure, "tok_s") for figure in ("single", "b8", "b32", "prefill")),
    ("load_s",),
    ("load_cold_s",),
)


def add_ranges(results: dict, rounds: list[dict]) -> None:
    """Each engine's (lowest, highest) of every RANGED figure over the rounds, as results[engine]["ranges"]
    keyed by the keys joined with "."; only with more than one round."""
    if len(rounds) < 2:
        return
    for name, merged in results.items():
        ranges = {}
        for keys in RANGED:
            values = [v for r in rounds if (v := get(r, name, *keys)) is not None]
            if len(values) > 1:
                ranges[".".join(keys)] = (min(values), max(values))
        if isinstance(merged, dict):
            merged["ranges"] = ranges
