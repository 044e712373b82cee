"""The engines compared: each turns (prompts, new tokens) into a Trace.

Every engine library is imported inside its class, so that a worker process loads only its own engine
(and its peak RSS counts only that)."""

from __future__ import annotations

import ctypes
import dataclasses
import os
import time
from pathlib import Path
from typing import Any

from .trace import Trace


class LLMasOSPeer:
    """LLMasOS through the engine's own add/step loop, the way the kernel drives it."""

    label = "LLMasOS"

    def __init__(self, model: Path, threads: int, options: dict[str, Any], notes: list[str]) -> None:
        from llmasos.config import EngineConfig
        from llmasos.engine.engine import LLMEngine
        from llmasos.engine.sampling import SamplingParams

        self.SamplingParams = SamplingParams
        wanted = {"num_threads": threads, "enable_prefix_caching": True, **options}
        known = {f.name for f in dataclasses.fields(EngineConfig)}
        missing = [k for k in wanted if k not in known]
        if missing:
            notes.append(f"EngineConfig has no {', '.join(missing)}; ran with the engine's defaults for them")
        if options:
            notes.append("engine options: " + ", ".join(f"{k}={v!r}" for k, v in options.items()))
        self.prefix_caching = "enable_prefix_caching" in known
        self.engine = LLMEngine.from_path(
            str(model), EngineConfig(**{k: wanted[k] for k in known & set(wanted)})
        )
        self._run_id = 0

    def greedy(self, n: int) -> Any:
        return self.SamplingParams(max_tokens=n, temperature=0, ignore_eos=True)

    def run(self, prompts: list[list[int]], new_tokens: int) -> Trace:
        self._run_id += 1
        ids = {f"bench-{self._run_id}-{i}": i for i in range(len(prompts))}
        trace = Trace(time.perf_counter())
        for request_id, i in ids.items():
            self.engine.add(request_id, prompts[i], self.greedy(new_tokens))
        while any(r in self.engine.requests for r in ids):
            outputs = self.engine.step()
            trace.record(time.perf_counter(), {ids[o.request_id]: o.token_ids[-1] for o in outputs})
        return trace

    def weight_bytes(self) -> dict:
        """Bytes of weights one decode step reads, and how they were counted.

        The model's own `weight_bytes_per_token()` when it has one: quantized layers keep their
        packed weights outside the parameters (and also keep a dense copy for large steps, which a
        one-token step does not read), so only the model knows. Otherwise every parameter and buffer
        once (a tied LM head is the embedding), less the tensors a step reads one row of: the RoPE
        tables and, when the LM head is a separate tensor, the embedding table."""
        model = self.engine.runner.model
        if hasattr(model, "weight_bytes_per_token"):
            return {"bytes": model.weight_bytes_per_token(), "source": "model.weight_bytes_per_token()"}
        seen: dict[int, int] = {}
        for name, tensor in [*model.named_parameters(), *model.named_buffers()]:
            if "rope" not in name:
                seen.setdefault(tensor.data_ptr(), tensor.numel() * tensor.element_size())
        total = sum(seen.values())
        embed = getattr(model, "embed_tokens", None)
        if embed is not None and getattr(model, "lm_head", None) is not None:
            total -= sum(p.numel() * p.element_size() for p in embed.parameters())
        return {"bytes": total, "source": "parameters and buffers"}


class LlamaCppPeer:
    """llama.cpp through llama-cpp-python's low-level C API: a batching server's loop, greedy in numpy.

    A fresh context per run: it starts with an empty KV cache whatever the bindings' version calls
    its cache-clearing function, and creating one costs milliseconds (the weights stay mapped).
    """

    def __init__(self, model: Path, threads: int, label: str) -> None:
        import llama_cpp
        import numpy as np

        self.lib, self.np, self.label, self.threads = llama_cpp, np, label, threads
        _quiet_llama_cpp(llama_cpp)
        llama_cpp.llama_backend_init()
        self.model = llama_cpp.llama_model_load_from_file(
            str(model).encode(), llama_cpp.llama_model_default_params()
        )
        if not self.model:
            raise RuntimeError(f"llama.cpp could not load {model}")
        self.n_vocab = llama_cpp.llama_vocab_n_tokens(llama_cpp.llama_model_get_vocab(self.model))
        # What serving a first request needs beyond the weights: a context (KV cache for the model's
        # whole window, compute buffers), as a server makes at startup. Timed apart (`ready_s`).
        start = time.perf_counter()
        n_ctx = llama_cpp.llama_model_n_ctx_train(self.model)
        llama_cpp.llama_free(self._context(1, n_ctx, min(512, n_ctx)))
        self.context_s = time.perf_counter() - start

    def _context(self, n_seqs: int, n_ctx: int, n_batch: int) -> Any:
        lib = self.lib
        params = lib.llama_context_default_params()
        # Pitfall: with n_seq_max > 1 the KV cache may be split evenly between sequences (the
        # non-unified cache), so n_ctx must be the total over all of them, not one sequence's length.
        params.n_ctx = -(-n_ctx // 256) * 256
        params.n_batch = n_batch  # most tokens one llama_decode call may take
        params.n_ubatch = min(512, n_batch)  # llama.cpp's default physical batch
        params.n_seq_max = n_seqs
        params.n_threads = params.n_threads_batch = self.threads
        ctx = lib.llama_init_from_model(self.model, params)
        if not ctx:
            raise RuntimeError("llama.cpp could not create a context")
        return ctx

    def _argmax(self, ctx: Any, index: int) -> int:
        # A view, not a copy, of row `index` of the batch (the index within the llama_batch, which
        # must have had logits requested): valid only until the next llama_decode.
        logits = self.np.ctypeslib.as_array(self.lib.llama_get_logits_ith(ctx, index), shape=(self.n_vocab,))
        return int(logits.argmax())

    def run(self, prompts: list[list[int]], new_tokens: int) -> Trace:
        lib = self.lib
        n_seqs, n_prompt = len(prompts), sum(len(p) for p in prompts)
        longest = max(len(p) for p in prompts)
        n_batch = max(n_prompt, n_seqs, 512)  # the whole prefill in one llama_decode call
        ctx = self._context(n_seqs, n_seqs * (longest + new_tokens), n_batch)
        # Room for every prompt token at once; each token may belong to one sequence.
        batch = lib.llama_batch_init(n_batch, 0, 1)
        try:
            trace = Trace(time.perf_counter())
            # Prefill: every prompt in one batch; logits only for each prompt's last token.
            k, last = 0, []
            for s, prompt in enumerate(prompts):
                for pos, token in enumerate(prompt):
                    self._put(batch, k, token, pos, s, pos == len(prompt) - 1)
                    k += 1
                last.append(k - 1)
            batch.n_tokens = k
            self._decode(ctx, batch)
            tokens = [self._argmax(ctx, i) for i in last]
            trace.record(time.perf_counter(), dict(enumerate(tokens)))
            # Decode: one token per sequence per step, sequence s at batch index s.
            for step in range(new_tokens - 1):
                for s, prompt in enumerate(prompts):
                    self._put(batch, s, tokens[s], len(prompt) + step, s, True)
                batch.n_tokens = n_seqs
                self._decode(ctx, batch)
                tokens = [self._argmax(ctx, s) for s in range(n_seqs)]
                trace.record(time.perf_counter(), dict(enumerate(tokens)))
            return trace
        finally:
            lib.llama_batch_free(batch)
            lib.llama_free(ctx)

    @staticmethod
    def _put(batch: Any, i: int, token: int, pos: int, seq: int, logits: bool) -> None:
        batch.token[i] = token
        batch.pos[i] = pos
        batch.n_seq_id[i] = 1
        batch.seq_id[i][0] = seq
        batch.logits[i] = logits

    def _decode(self, ctx: Any, batch: Any) -> None:
        # Non-zero is not an exception: 1 means no KV slot was found (context too small), negative an error.
        rc = self.lib.llama_decode(ctx, batch)
        if rc != 0:
            raise RuntimeError(f"llama_decode returned {rc}")


def _quiet_llama_cpp(lib: Any) -> None:
    """Silence llama.cpp's per-load and per-context logging (hundreds of lines on stderr)."""
    callback = lib.llama_log_callback(lambda level, text, user_data: None)
    _quiet_llama_cpp.keep = callback  # type: ignore[attr-defined]  # C keeps a pointer: must not be freed
    lib.llama_log_set(callback, ctypes.c_void_p())


def requantize(src: Path, dst: Path, ftype_name: str, threads: int) -> float:
    """Re-quantize a GGUF file with llama.cpp; seconds taken."""
    import llama_cpp

    _quiet_llama_cpp(llama_cpp)
    params = llama_cpp.llama_model_quantize_default_params()
    params.ftype = getattr(llama_cpp, f"LLAMA_FTYPE_MOSTLY_{ftype_name}")
    params.nthread = threads
    # Pitfall: the shipped file is already quantized (Q4_1), which llama.cpp refuses to re-quantize
    # unless told to; without this flag the call only returns a non-zero code.
    params.allow_requantize = True
    start = time.perf_counter()
    rc = llama_cpp.llama_model_quantize(str(src).encode(), str(dst).encode(), ctypes.byref(params))
    if rc != 0:
        raise RuntimeError(f"llama_model_quantize to {ftype_name} returned {rc}")
    return time.perf_counter() - start


class TransformersPeer:
    """Hugging Face transformers `generate`, fp32, batched with left padding, greedy, fixed length."""

    label = "transformers"

    def __init__(self, model: Path, threads: int) -> None:
        os.environ.setdefault("TQDM_DISABLE", "1")  # the GGUF loader draws progress bars
        import torch
        from transformers import AutoModelForCausalLM
        from transformers.utils import logging as hf_logging

        hf_logging.set_verbosity_error()
        hf_logging.disable_progress_bar()
        torch.set_num_threads(threads)
        self.torch = torch
        self.model = AutoModelForCausalLM.from_pretrained(
            str(model.parent), gguf_file=model.name, dtype=torch.float32
        ).eval()

    def run(self, prompts: list[list[int]], new_tokens: int) -> Trace:
        torch = self.torch
        longest = max(len(p) for p in prompts)
        pad = 0
        # Left padding: every row's last prompt token sits in the last column, where generate appends.
        input_ids = torch.tensor([[pad] * (longest - len(p)) + p for p in prompts])
        mask = torch.tensor([[0] * (longest - len(p)) + [1] * len(p) for p in prompts])
        trace = Trace(time.perf_counter())
        streamer = _TraceStreamer(trace)
        with torch.no_grad():
            self.model.generate(
                input_ids,
                attention_mask=mask,
                do_sample=False,
                max_new_tokens=new_tokens,
                min_new_tokens=new_tokens,
                pad_token_id=pad,
                streamer=streamer,
            )
        return trace


class _TraceStreamer:
    """A transformers streamer that timestamps each step: `put` gets the prompt first, then each
    step's new token of every row (any batch size; the library's text streamers allow only one)."""

    def __init__(self, trace: Trace) -> None:
        self.trace, self.seen_prompt = trace, False

    def put(self, value: Any) -> None:
        now = time.perf_counter()
        if not self.seen_prompt:
            self.seen_prompt = True
            return
        self.trace.record(now, dict(enumerate(value.reshape(-1).tolist())))

    def end(self) -> None:
        pass
