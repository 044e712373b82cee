"""Single-stream decode and prefill speed: the LLMasOS engine vs Hugging Face transformers.

Both load the same GGUF file, run with the same thread count and the same prompt, in this one
process, one after the other. Prints tokens/s for each and the ratio engine / transformers.

    .venv/bin/python benchmarks/engine_vs_transformers.py [--threads 2] [--dtype float32]
"""

from __future__ import annotations

import argparse
import gc
import os
import time
from pathlib import Path

import torch

from llmasos.config import EngineConfig
from llmasos.engine.engine import LLMEngine
from llmasos.engine.sampling import SamplingParams
from llmasos.library.store import ModelStore
from llmasos.model.tokenizer import Tokenizer

TEXT = (
    "The history of computing is a story of layers: hardware, then operating systems that share it "
    "between programs, then languages and libraries that make programs easier to write. "
)


def prompt_ids(tokenizer: Tokenizer, n: int) -> list[int]:
    ids: list[int] = []
    while len(ids) < n:
        ids += tokenizer.encode(TEXT)
    return ids[:n]


def bench_engine(path: Path, dtype: str, ids: list[int], new_tokens: int, repeats: int) -> dict:
    # No prefix cache: every repeat must compute its prompt, as transformers does.
    config = EngineConfig(dtype=dtype, max_num_batched_tokens=max(len(ids), 512), enable_prefix_caching=False)
    engine = LLMEngine.from_path(str(path), config)
    greedy = SamplingParams(max_tokens=new_tokens, temperature=0, ignore_eos=True)
    list(engine.stream(ids[:16], SamplingParams(max_tokens=4, temperature=0)))  # warm-up
    prefill, decode = [], []
    for _ in range(repeats):
        start = time.perf_counter()
        first = None
        for _out in engine.stream(ids, greedy):
            if first is None:
                first = time.perf_counter()
        end = time.perf_counter()
        prefill.append(len(ids) / (first - start))
        decode.append((new_tokens - 1) / (end - first))
    del engine
    gc.collect()
    return {"prefill": max(prefill), "decode": max(decode)}


def bench_transformers(path: Path, dtype: str, ids: list[int], new_tokens: int, repeats: int) -> dict:
    from transformers import AutoModelForCausalLM
    from transformers.utils import logging as hf_logging

    hf_logging.set_verbosity_error()
    hf_logging.disable_progress_bar()
    torch_dtype = torch.float32 if dtype in ("auto", "float32") else getattr(torch, dtype)
    model = AutoModelForCausalLM.from_pretrained(str(path.parent), gguf_file=path.name, dtype=torch_dtype)
    model.eval()
    input_ids = torch.tensor([ids])
    kwargs = {"do_sample": False, "pad_token_id": 0}
    with torch.no_grad():
        model.generate(input_ids[:, :16], max_new_tokens=4, **kwargs)  # warm-up
        prefill, decode = [], []
        for _ in range(repeats):
            start = time.perf_counter()
            model.generate(input_ids, max_new_tokens=1, min_new_tokens=1, **kwargs)
            t_prefill = time.perf_counter() - start
            start = time.perf_counter()
            model.generate(input_ids, max_new_tokens=new_tokens, min_new_tokens=new_tokens, **kwargs)
            t_total = time.perf_counter() - start
            prefill.append(len(ids) / t_prefill)
            decode.append((new_tokens - 1) / (t_total - t_prefill))
    return {"prefill": max(prefill), "decode": max(decode)}


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--model", default="default", help="library model name (default: the default model)")
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--dtype", default="float32", help="float32 or bfloat16, for both")
    parser.add_argument("--prompt-tokens", type=int, default=512)
    parser.add_argument("--new-tokens", type=int, default=128)
    parser.add_argument("--repeats", type=int, default=2, help="best of N")
    args = parser.parse_args()
    os.environ.setdefault("TQDM_DISABLE", "1")  # transformers' GGUF loader draws progress bars

    torch.set_num_threads(args.threads)
    store = ModelStore()
    if args.model == "default":
        store.pull("default", progress=False)  # a no-op when already in the library
    path = store.model_path(args.model)
    ids = prompt_ids(Tokenizer.from_gguf(path), args.prompt_tokens)
    print(
        f"model {path.name}, {args.threads} threads, dtype {args.dtype}, "
        f"{len(ids)}-token prompt, {args.new_tokens} new tokens, best of {args.repeats}"
    )

    ours = bench_engine(path, args.dtype, ids, args.new_tokens, args.repeats)
    theirs = bench_transformers(path, args.dtype, ids, args.new_tokens, args.repeats)
    print(f"{'':24}{'llmasos':>12}{'transformers':>14}{'ratio':>8}")
    for key, label in (("decode", "decode tok/s (B=1)"), ("prefill", f"prefill tok/s ({len(ids)})")):
        print(f"{label:24}{ours[key]:12.1f}{theirs[key]:14.1f}{ours[key] / theirs[key]:8.2f}x")


if __name__ == "__main__":
    main()
