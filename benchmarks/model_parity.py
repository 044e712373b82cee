"""Greedy agreement and logits error of LLMasOS and llama.cpp against transformers, on the same GGUF.

For one GGUF file (issue 23: Qwen2.5-Coder-1.5B Q4_K_M and Gemma 3 270M Q4_K_M), every engine gets the
same token ids of several prompts (chat prompts where the file has a chat template, plain text to
continue where it has none) and, for each prompt alone (one stream):

- its greedy continuation of `--tokens` (32) tokens, not stopped at end-of-sequence, compared with
  transformers' token by token: tokens equal up to the first divergence, and how many prompts agree on
  all of them; at the first divergence, transformers' own logit margin between its token and the other
  engine's (a near tie there is float noise, not a wrong model);
- the logits of the prompt's last position against transformers': max and mean absolute difference,
  top-1 equal, and the overlap of the top-5 sets.

transformers is the reference: it dequantizes the file's weights to float32 and computes in float32.
LLMasOS by default multiplies the file's own 4-/8-bit integers with 8-bit activations and holds the LM
head as per-row int8; llama.cpp multiplies its blocks as stored, also with 8-bit activations. So both
differ from the reference by quantization noise of the activations; llama.cpp's difference, printed
beside ours, is what "within noise" means. `llmasos-f32` (the engine with `dtype=float32`: the file
dequantized to float32, as transformers has it) shows the engine's model code without that noise.

Each engine runs in its own subprocess (this script with `--worker`), one after another, so no two
models are resident at once (transformers holds 1.5B parameters in float32: ~7 GB).

    PYTHONPATH=. .venv/bin/python benchmarks/model_parity.py --model FILE.gguf [--threads 2]
        [--engines transformers,llmasos,llamacpp,llmasos-f32] [--tokens 32] [--json out.json]
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import numpy as np

ENGINES = ("transformers", "llmasos", "llamacpp", "llmasos-f32")
TOP_K = 10  # transformers' top tokens kept per step, for the margin at a divergence

CHAT_QUESTIONS = [
    "What is the capital of France?",
    "Write a Python function that checks whether a number is prime.",
    "Explain what an operating system does, in two sentences.",
    "Translate 'good morning, my friend' into French.",
    "Summarize the plot of Romeo and Juliet in one sentence.",
    "What is 17 multiplied by 23?",
    "List three uses of a hash map.",
    "Write a SQL query that counts the rows of a table named users.",
]
CONTINUATIONS = [
    "The capital of France is",
    "def fibonacci(n):\n    ",
    "Once upon a time, in a small village,",
    "The James Webb Space Telescope is",
    "import numpy as np\n\n# Compute the mean of",
    "In 1969, the first humans",
    "The three primary colors are",
    "Water boils at a temperature of",
]


def build_prompts(model: Path) -> tuple[list[list[int]], str]:
    """Every engine's prompt ids, and what kind they are."""
    from llmasos.model.tokenizer import Tokenizer

    tok = Tokenizer.from_gguf(model)
    if tok.has_chat_template:
        return [tok.encode_chat([{"role": "user", "content": q}]) for q in CHAT_QUESTIONS], "chat"
    return [tok.encode(text) for text in CONTINUATIONS], "continuation"


# --- workers: one engine each, in its own process ------------------------------------------------


def run_transformers(model: Path, prompts: list[list[int]], n: int) -> dict[str, np.ndarray]:
    """Greedy by hand (argmax of each step's logits, KV cache reused), so no end-of-sequence or
    generation-config rule stops or bends it; keeps each step's top tokens for the margins."""
    import torch
    from transformers import AutoModelForCausalLM
    from transformers.utils import logging as hf_logging

    hf_logging.set_verbosity_error()
    hf_logging.disable_progress_bar()
    hf = AutoModelForCausalLM.from_pretrained(str(model.parent), gguf_file=model.name, dtype=torch.float32)
    hf.eval()
    tokens, last, top_ids, top_values = [], [], [], []
    with torch.no_grad():
        for ids in prompts:
            out = hf(torch.tensor([ids]), use_cache=True)
            logits = out.logits[0, -1].float()
            last.append(logits.numpy().copy())
            seq, step_ids, step_values = [], [], []
            for _ in range(n):
                values, idx = logits.topk(TOP_K)
                step_ids.append(idx.numpy())
                step_values.append(values.numpy())
                seq.append(int(idx[0]))
                out = hf(torch.tensor([[seq[-1]]]), past_key_values=out.past_key_values, use_cache=True)
                logits = out.logits[0, -1].float()
            tokens.append(seq)
            top_ids.append(step_ids)
            top_values.append(step_values)
    return {
        "tokens": np.array(tokens),
        "last_logits": np.stack(last),
        "top_ids": np.array(top_ids),
        "top_values": np.array(top_values),
    }


def run_llmasos(model: Path, prompts: list[list[int]], n: int, dtype: str) -> dict[str, np.ndarray]:
    """The engine's own step loop, one prompt at a time; the prompt's last-position logits are the first
    ones the runner computes for it (captured around the model's `compute_logits`)."""
    import torch

    from llmasos.config import EngineConfig
    from llmasos.engine.engine import LLMEngine
    from llmasos.engine.sampling import SamplingParams

    engine = LLMEngine.from_path(str(model), EngineConfig(dtype=dtype, enable_prefix_caching=False))
    net = engine.runner.model
    captured: list[np.ndarray] = []
    compute_logits = net.compute_logits

    def capturing(hidden: torch.Tensor) -> torch.Tensor:
        logits = compute_logits(hidden)
        captured.append(logits[-1].float().numpy().copy())
        return logits

    net.compute_logits = capturing
    greedy = SamplingParams(max_tokens=n, temperature=0, ignore_eos=True)
    tokens, last = [], []
    for ids in prompts:
        captured.clear()
        tokens.append(engine.generate([ids], greedy)[0][1])
        last.append(captured[0])
    return {"tokens": np.array(tokens), "last_logits": np.stack(last)}


def run_llamacpp(model: Path, prompts: list[list[int]], n: int, threads: int) -> dict[str, np.ndarray]:
    """llama.cpp's low-level API (the peers benchmark's driver): a fresh context per prompt."""
    sys.path.insert(0, str(Path(__file__).resolve().parent))
    from peers.engines import LlamaCppPeer

    peer = LlamaCppPeer(model, threads, "llamacpp")
    lib, np_ = peer.lib, peer.np
    tokens, last = [], []
    for ids in prompts:
        ctx = peer._context(1, len(ids) + n, max(len(ids), 512))
        batch = lib.llama_batch_init(max(len(ids), 512), 0, 1)
        try:
            for pos, token in enumerate(ids):
                peer._put(batch, pos, token, pos, 0, pos == len(ids) - 1)
            batch.n_tokens = len(ids)
            peer._decode(ctx, batch)
            logits = np_.ctypeslib.as_array(
                lib.llama_get_logits_ith(ctx, len(ids) - 1), shape=(peer.n_vocab,)
            )
            last.append(logits.copy())
            seq = [int(logits.argmax())]
            for step in range(n - 1):
                peer._put(batch, 0, seq[-1], len(ids) + step, 0, True)
                batch.n_tokens = 1
                peer._decode(ctx, batch)
                seq.append(peer._argmax(ctx, 0))
            tokens.append(seq)
        finally:
            lib.llama_batch_free(batch)
            lib.llama_free(ctx)
    return {"tokens": np.array(tokens), "last_logits": np.stack(last)}


def run_worker(
    name: str, model: Path, prompts: list[list[int]], n: int, threads: int
) -> dict[str, np.ndarray]:
    import torch

    torch.set_num_threads(threads)
    if name == "transformers":
        return run_transformers(model, prompts, n)
    if name == "llmasos":
        return run_llmasos(model, prompts, n, "auto")
    if name == "llmasos-f32":
        return run_llmasos(model, prompts, n, "float32")
    if name == "llamacpp":
        return run_llamacpp(model, prompts, n, threads)
    raise ValueError(f"unknown engine {name!r}")


def spawn(name: str, model: Path, prompts_file: Path, out: Path, args: argparse.Namespace) -> dict | None:
    """One engine in a fresh interpreter; its arrays, or None (with a note on stderr) if it failed."""
    cmd = [sys.executable, __file__, "--worker", name, "--model", str(model), "--prompts", str(prompts_file)]
    cmd += ["--out", str(out), "--threads", str(args.threads), "--tokens", str(args.tokens)]
    env = dict(
        os.environ, OMP_NUM_THREADS=str(args.threads), TOKENIZERS_PARALLELISM="false", TQDM_DISABLE="1"
    )
    print(f"running {name} ...", file=sys.stderr, flush=True)
    start = time.perf_counter()
    proc = subprocess.run(cmd, env=env, check=False)
    print(f"  {name}: {time.perf_counter() - start:.0f} s", file=sys.stderr, flush=True)
    if proc.returncode != 0 or not out.exists():
        print(f"  {name}: worker exited with {proc.returncode}", file=sys.stderr)
        return None
    with np.load(out) as arrays:
        return dict(arrays)


# --- comparison ---------------------------------------------------------------------------------


def common_prefix(a: np.ndarray, b: np.ndarray) -> int:
    differ = np.nonzero(a != b)[0]
    return int(differ[0]) if len(differ) else len(a)


def divergence_margin(ref: dict[str, np.ndarray], prompt: int, step: int, token: int) -> float | None:
    """transformers' logit of its own token minus that of `token` at `step`; None if `token` was not
    among its top ones (a real disagreement, not a near tie)."""
    ids, values = ref["top_ids"][prompt, step], ref["top_values"][prompt, step]
    hit = np.nonzero(ids == token)[0]
    return None if not len(hit) else float(values[0] - values[hit[0]])


def compare(ref: dict[str, np.ndarray], other: dict[str, np.ndarray]) -> dict:
    """Agreement of `other` with the reference, per prompt and over all of them."""
    prefixes, margins = [], []
    for p, (theirs, ours) in enumerate(zip(ref["tokens"], other["tokens"], strict=True)):
        k = common_prefix(theirs, ours)
        prefixes.append(k)
        if k < len(theirs):
            margins.append(divergence_margin(ref, p, k, int(ours[k])))
    diff = np.abs(other["last_logits"] - ref["last_logits"])
    top1 = other["last_logits"].argmax(-1) == ref["last_logits"].argmax(-1)
    top5 = [
        len(set(np.argsort(-a)[:5]) & set(np.argsort(-b)[:5])) / 5
        for a, b in zip(other["last_logits"], ref["last_logits"], strict=True)
    ]
    return {
        "prefixes": prefixes,
        "all_equal": sum(k == ref["tokens"].shape[1] for k in prefixes),
        "margins_at_divergence": margins,
        "logits_max_abs": float(diff.max()),
        "logits_mean_abs": float(diff.mean()),
        "logits_range": float(np.ptp(ref["last_logits"], axis=-1).mean()),
        "top1_equal": int(top1.sum()),
        "top5_overlap": float(np.mean(top5)),
    }


def print_report(model: Path, kind: str, n: int, rows: dict[str, dict], pairwise: dict[str, dict]) -> None:
    prompts = len(next(iter(rows.values()))["prefixes"]) if rows else 0
    print(
        f"\nmodel {model.name}: {prompts} {kind} prompts, {n} greedy tokens each, reference transformers fp32"
    )
    head = f"{'engine':<13}{'all ' + str(n):>7}{'mean prefix':>12}{'max|dlogit|':>12}{'mean|dlogit|':>13}"
    print(head + f"{'top-1':>7}{'top-5':>7}  tokens equal per prompt (margin at divergence)")
    for name, r in rows.items():
        margins = iter(r["margins_at_divergence"])
        per_prompt = " ".join(str(k) if k == n else f"{k}({_margin(next(margins))})" for k in r["prefixes"])
        print(
            f"{name:<13}{r['all_equal']:>4}/{prompts:<2}{np.mean(r['prefixes']):>12.1f}"
            f"{r['logits_max_abs']:>12.3f}{r['logits_mean_abs']:>13.4f}{r['top1_equal']:>5}/{prompts}"
            f"{r['top5_overlap']:>7.2f}  {per_prompt}"
        )
    if rows:
        print(
            f"(transformers' last-position logits span {next(iter(rows.values()))['logits_range']:.1f}"
            " on average, max - min)"
        )
    for pair, r in pairwise.items():
        print(f"{pair}: all {n} equal {r['all_equal']}/{prompts}, tokens equal per prompt {r['prefixes']}")


def _margin(value: float | None) -> str:
    return "not in top-10" if value is None else f"{value:.2f}"


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--model", type=Path, required=True, help="the GGUF file every engine runs")
    parser.add_argument(
        "--engines", default="transformers,llmasos,llamacpp", help=f"subset of {','.join(ENGINES)}"
    )
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--tokens", type=int, default=32, help="greedy tokens per prompt")
    parser.add_argument("--json", type=Path, help="write the comparison to this file")
    parser.add_argument("--worker", help=argparse.SUPPRESS)
    parser.add_argument("--prompts", type=Path, help=argparse.SUPPRESS)
    parser.add_argument("--out", type=Path, help=argparse.SUPPRESS)
    args = parser.parse_args(argv)
    if args.worker:
        prompts = json.loads(args.prompts.read_text())
        arrays = run_worker(args.worker, args.model, prompts, args.tokens, args.threads)
        np.savez(args.out, **arrays)
        return
    engines = [e.strip() for e in args.engines.split(",") if e.strip()]
    if "transformers" not in engines or set(engines) - set(ENGINES):
        raise SystemExit(f"--engines: transformers (the reference) and any of {', '.join(ENGINES[1:])}")
    prompts, kind = build_prompts(args.model)
    results = {}
    with tempfile.TemporaryDirectory(prefix="llmasos-parity-") as tmp:
        prompts_file = Path(tmp) / "prompts.json"
        prompts_file.write_text(json.dumps(prompts))
        for name in engines:
            results[name] = spawn(name, args.model, prompts_file, Path(tmp) / f"{name}.npz", args)
    if results["transformers"] is None:
        raise SystemExit("transformers failed: nothing to compare against")
    ref = results.pop("transformers")
    rows = {name: compare(ref, arrays) for name, arrays in results.items() if arrays is not None}
    pairwise = {}
    if results.get("llmasos") is not None and results.get("llamacpp") is not None:
        tokens = zip(results["llmasos"]["tokens"], results["llamacpp"]["tokens"], strict=True)
        prefixes = [common_prefix(a, b) for a, b in tokens]
        pairwise["llmasos vs llamacpp"] = {"prefixes": prefixes, "all_equal": prefixes.count(args.tokens)}
    print_report(args.model, kind, args.tokens, rows, pairwise)
    if args.json:
        args.json.write_text(
            json.dumps({"model": str(args.model), "engines": rows, "pairwise": pairwise}, indent=1)
        )


if __name__ == "__main__":
    main()
