"""The Llama family (Llama 2/3, Mistral, SmolLM, Qwen2) as a pure torch module over a paged KV cache.

Projections are fused as they are loaded: q/k/v into one `qkv_proj`, gate/up into one
`gate_up_proj`, so a layer is two matmuls in, two out. `quantize` swaps those linear layers (and
the LM head) for another weight format after loading (see `weight_formats.py`).

Per-token work is kept to a fixed few ops per layer because batch-1 decode of a small model is
as much Python/dispatch time as weight streaming: RoPE (with the 1/sqrt(head_dim) attention scale
folded into q's table) rotates q and k in one call, tables are gathered once per step, and the
linear layers may return bfloat16, which the residual adds promote back to the model's dtype.
"""

from __future__ import annotations

import copy
from typing import Any

import torch
from torch import nn

from llmasos.model.attention import AttentionMetadata, paged_attention
from llmasos.model.config import ModelConfig
from llmasos.model.layers import Linear, RMSNorm, apply_rope, rope_cos_sin, rope_inv_freq, swiglu
from llmasos.model.q8_embedding import Q8Embedding
from llmasos.model.quant_linear import DEFAULT_MAX_QUANT_TOKENS, NATIVE_DECODE_MAX_SEQS, NATIVE_MAX_TOKENS
from llmasos.model.weight_formats import make_linear


class LlamaDecoderLayer(nn.Module):
    """Pre-norm attention then pre-norm SwiGLU, each with a residual."""

    def __init__(self, config: ModelConfig) -> None:
        super().__init__()
        self.num_heads = config.num_heads
        self.num_kv_heads = config.num_kv_heads
        self.head_dim = config.head_dim
        self.q_size, self.kv_size = config.q_size, config.kv_size
        self.attn_norm = RMSNorm(config.hidden_size, config.rms_norm_eps)
        self.qkv_proj = Linear(config.hidden_size, config.q_size + 2 * config.kv_size, config.attention_bias)
        self.o_proj = Linear(config.q_size, config.hidden_size)
        self.ffn_norm = RMSNorm(config.hidden_size, config.rms_norm_eps)
        self.gate_up_proj = Linear(config.hidden_size, 2 * config.intermediate_size)
        self.down_proj = Linear(config.intermediate_size, config.hidden_size)

    def forward(
        self,
        x: torch.Tensor,  # (N, hidden)
        cos: torch.Tensor,  # (N, n_heads + n_kv_heads, head_dim), q rows pre-scaled
        sin: torch.Tensor,  # signed sin, same shape
        kv_cache: torch.Tensor,  # (2, num_slots, n_kv_heads, head_dim)
        meta: AttentionMetadata,
    ) -> torch.Tensor:
        n, heads = x.shape[0], self.num_heads
        qkv = self.qkv_proj(self.attn_norm(x)).to(cos.dtype)  # no-op unless weights are int/bf16
        qk_size = self.q_size + self.kv_size
        qk = apply_rope(qkv[:, :qk_size].view(n, heads + self.num_kv_heads, self.head_dim), cos, sin)
        v = qkv[:, qk_size:].view(n, self.num_kv_heads, self.head_dim)
        attn = paged_attention(qk[:, :heads], qk[:, heads:], v, kv_cache[0], kv_cache[1], meta)
        x = x + self.o_proj(attn)
        return x + self.down_proj(swiglu(self.gate_up_proj(self.ffn_norm(x))))


class LlamaModel(nn.Module):
    """Token ids in, hidden states out; `compute_logits` applies the (possibly tied) LM head."""

    def __init__(self, config: ModelConfig, *, rope_tables: bool = True) -> None:
        """`rope_tables=False` leaves the RoPE tables to the caller (the packed cache stores them:
        computing Qwen2.5's for 32,768 positions took 0.27 s of each load)."""
        super().__init__()
        self.config = config
        # Filled by the loader: an uninitialized table (nn.Embedding's own random init on the meta device,
        # where the loader builds the module, first imports torch's meta kernels, as below).
        self.embed_tokens = nn.Embedding.from_pretrained(torch.empty(config.vocab_size, config.hidden_size))
        self.layers = nn.ModuleList(LlamaDecoderLayer(config) for _ in range(config.num_layers))
        self.norm = RMSNorm(config.hidden_size, config.rms_norm_eps)
        self.lm_head = None if config.tie_word_embeddings else Linear(config.hidden_size, config.vocab_size)
        # The LM head in a non-default weight format (None: `lm_head` or the tied embedding, dense).
        self.logits_proj: nn.Module | None = None
        # The layers' weights as the C++ forward step holds them (its StepWeights, see
        # `_enable_native_step`); None: the torch layers run.
        self.native_layers: Any = None
        self.native_kernels = None
        self.native_keeps_dense = False  # whether the int layers keep a dense copy for large steps
        # The weight format the loader packed this model in straight from its file (packed_build.py),
        # or None for float weights; `quantize` to that format returns the model itself.
        self.packed_format: str | None = None
        # Computed on the CPU even where the module is built on the meta device (the loader builds it
        # there, then installs tables on the weights' device): torch's meta `arange` first imports its
        # Python reference kernels, which was 2.3 s of every model load.
        if rope_tables:
            with torch.device("cpu"):
                self.set_rope_inv_freq(rope_inv_freq(config.head_dim, config.rope_theta, config.rope_scaling))

    def set_rope_inv_freq(self, inv_freq: torch.Tensor) -> None:
        """Install rotary frequencies (GGUF files may ship precomputed llama3 factors)."""
        cos, sin = rope_cos_sin(inv_freq, self.config.context_length)
        self.register_buffer("rope_cos", cos, persistent=False)
        self.register_buffer("rope_sin", sin, persistent=False)
        # Per-head factor of the tables: q heads carry attention's 1/sqrt(head_dim), k heads 1.
        c = self.config
        head_scale = torch.ones(c.num_heads + c.num_kv_heads, 1, device=cos.device)
        head_scale[: c.num_heads] = c.head_dim**-0.5
        self.register_buffer("rope_head_scale", head_scale, persistent=False)

    def forward(
        self,
        input_ids: torch.Tensor,  # (N,)
        positions: torch.Tensor,  # (N,)
        kv_caches: torch.Tensor,  # (num_layers, 2, num_slots, n_kv_heads, head_dim)
        meta: AttentionMetadata,
    ) -> torch.Tensor:  # (N, hidden)
        x = self.embed_tokens(input_ids)
        native = self._native_step_kind(x.shape[0], kv_caches.dtype, meta)
        if native is not None:
            c = self.config
            chunks = native == "chunks"
            return self.native_kernels.forward_step(
                x,
                positions,
                meta.slot_mapping,
                meta.kv_slots,
                kv_caches,
                self.rope_cos,
                self.rope_sin,
                self.native_layers,
                self.norm.weight,
                c.num_heads,
                c.num_kv_heads,
                c.head_dim,
                c.rms_norm_eps,
                query_start=meta.query_start if chunks else None,
                context_lens=meta.context_lens if chunks else None,
            )
        # The model's dtype (its embedding's), whatever the cache stores: keys and values are rounded
        # to the cache's dtype only where they are written.
        dtype = x.dtype
        if dtype != torch.float32:
            # The residual stream stays float32 with half-precision weights (their matmuls still take
            # and give bfloat16): summed in bfloat16 over 30 layers, SmolLM2's first-word logits for
            # "What is the capital of France?" drifted by 0.3 and "L'Étoile" beat "The" on CUDA.
            x = x.float()
        cos = (self.rope_cos[positions].unsqueeze(1) * self.rope_head_scale).to(dtype)  # (N, heads, D)
        sin = (self.rope_sin[positions].unsqueeze(1) * self.rope_head_scale).to(dtype)
        for layer, kv_cache in zip(self.layers, kv_caches, strict=True):
            x = layer(x, cos, sin, kv_cache, meta)
        return self.norm(x)

    def _native_step_kind(
        self, num_tokens: int, kv_dtype: torch.dtype, meta: AttentionMetadata
    ) -> str | None:
        """Whether the C++ forward step takes this step: as "decode", as "chunks", or None (torch layers).

        Steps with prompt chunks take it where its GEMMs are what the torch layers would run anyway: every
        size when the layers keep no dense copy (the default), else up to NATIVE_MAX_TOKENS tokens."""
        if self.native_layers is None or kv_dtype not in (torch.float32, torch.bfloat16):
            return None
        if meta.decode:
            return "decode" if num_tokens <= NATIVE_DECODE_MAX_SEQS else None
        if (
            meta.query_start is not None
            and meta.context_lens is not None
            and self.config.head_dim % 16 == 0
            and (not self.native_keeps_dense or num_tokens <= NATIVE_MAX_TOKENS)
        ):
            return "chunks"
        return None

    def compute_logits(self, hidden: torch.Tensor) -> torch.Tensor:
        """Float32 logits (n, vocab) for the given hidden states."""
        if self.logits_proj is not None:
            return self.logits_proj(hidden).float()
        weight = self.embed_tokens.weight if self.lm_head is None else self.lm_head.weight
        if weight.dtype != torch.float32:
            # Products summed and returned in float32: bfloat16 logits move in steps of 0.125 near 25,
            # and SmolLM2's "The" (25.33) and "L" (25.24), its first word for "What is the capital of
            # France?", rounded to the same value, so greedy decoding answered "L'Étoile, ...".
            return torch.nn.functional.linear(hidden.float(), weight.float())
        return torch.nn.functional.linear(hidden, weight)

    def quantize(
        self, weight_format: str, max_quant_tokens: int = DEFAULT_MAX_QUANT_TOKENS, *, keep_dense: bool = True
    ) -> LlamaModel:
        """A copy of this model whose linear layers and LM head hold `weight_format` (resolved).

        keep_dense=False: the int layers keep no float32 copy for large steps (EngineConfig's
        `dense_prefill_weights`) where the C++ kernels can run every step.

        The copy shares every tensor it does not convert (embedding, norms, RoPE tables), and this
        model is left as it was, so one loaded model can serve engines of different formats."""
        if self.packed_format is not None:
            if weight_format != self.packed_format:
                raise ValueError(
                    f"this model was loaded packed as {self.packed_format}; load it again for {weight_format}"
                )
            return self
        model = copy.copy(self)
        model._modules = dict(self._modules)
        model.layers = nn.ModuleList()
        for layer in self.layers:
            new = copy.copy(layer)
            new._modules = dict(layer._modules)
            for name in ("qkv_proj", "o_proj", "gate_up_proj", "down_proj"):
                old = getattr(layer, name)
                setattr(
                    new,
                    name,
                    make_linear(
                        old.weight,
                        old.bias,
                        weight_format,
                        max_quant_tokens=max_quant_tokens,
                        keep_dense=keep_dense,
                    ),
                )
            model.layers.append(new)
        # The LM head has one row per sampled sequence. With the C++ kernels its int8 GEMM serves every
        # batch (at 32 rows it took 11-21 ms against 34-40 ms for the float32 GEMM on a dequantized
        # copy, which MKL also repacked on every call), so no float copy is kept (113 MB for SmolLM2);
        # without them the layer keeps one (quant_linear.py), as torch's int8pack was 1.5x slower than fp32.
        # The embedding lookup stays exact (one row per token): dequantized int8 rows there flipped
        # SmolLM2's int4 answer to "What is the capital of France?". int4 keeps an int8 head for the
        # same reason (the file's own head is 8-bit); a 4-bit head would save 10 MB per token.
        head = self.embed_tokens.weight if self.lm_head is None else self.lm_head.weight
        head_format = "int8" if weight_format == "int4" else weight_format
        model.logits_proj = make_linear(
            head,
            None,
            head_format,
            max_quant_tokens=max_quant_tokens,
            keep_dense=False,
        )
        # The lookup table in the file's own 8-bit form where that is exact (Q8Embedding). The head
        # above was made from the float table, which this copy no longer holds.
        embedding = Q8Embedding.from_dense(self.embed_tokens.weight)
        if embedding is not None:
            model.embed_tokens = embedding
        model._enable_native_step()
        return model

    def _enable_native_step(self) -> None:
        """Route steps through the C++ forward step when every projection has its kernel.

        Why: a decode step of a small model is ~20 torch ops per layer whose dispatch cost as much as
        the weight streaming, and a prompt chunk's norms, RoPE and SwiGLU in torch ops (with conversions
        between them) were a tenth of its prefill; the C++ step runs all layers in one call with the
        same int4 weights.
        """
        tensors: list[torch.Tensor] = []
        keeps_dense = False
        for layer in self.layers:
            if layer.attn_norm.weight.dtype != torch.float32:
                return
            tensors += [layer.attn_norm.weight.contiguous(), layer.ffn_norm.weight.contiguous()]
            for name in ("qkv_proj", "o_proj", "gate_up_proj", "down_proj"):
                proj = getattr(layer, name)
                native = getattr(proj, "native_tensors", None)
                parts = native() if native is not None else None
                if parts is None:
                    return
                tensors += parts
                keeps_dense = keeps_dense or proj.dense is not None
        if self.norm.weight.dtype != torch.float32 or self.rope_cos.device.type != "cpu":
            return
        self.native_kernels = self.layers[0].qkv_proj.kernels
        self.native_layers = self.native_kernels.StepWeights(tensors)  # checked and viewed once, not per step
        self.native_keeps_dense = keeps_dense

    def held_bytes(self) -> int:
        """Bytes of every tensor this model holds, each storage once: parameters, buffers, and the
        plain tensor attributes where quantized layers and the Q8_0 embedding keep their packed weights
        (counting parameters alone gave 0.14 MB for SmolLM2's int4 engine, which holds ~140 MB)."""
        storages: dict[int, int] = {}
        for module in self.modules():
            tensors = [*module.parameters(recurse=False), *module.buffers(recurse=False)]
            tensors += [v for v in vars(module).values() if isinstance(v, torch.Tensor)]
            tensors += [
                t
                for v in vars(module).values()
                if isinstance(v, list)
                for t in v
                if isinstance(t, torch.Tensor)
            ]
            for tensor in tensors:
                storage = tensor.untyped_storage()
                storages[storage.data_ptr()] = storage.nbytes()
        return sum(storages.values())

    def weight_bytes_per_token(self) -> int:
        """Bytes of weights a one-token decode step reads (one embedding row, every matrix once)."""
        embed = self.embed_tokens  # one row; a Q8Embedding or Int4Embedding counts its own in the loop below
        total = (
            0 if hasattr(embed, "bytes_per_token") else embed.weight[0].numel() * embed.weight.element_size()
        )
        for module in self.modules():
            if hasattr(module, "bytes_per_token"):
                total += module.bytes_per_token()
            elif isinstance(module, (Linear, RMSNorm)):
                total += sum(p.numel() * p.element_size() for p in module.parameters())
        if self.logits_proj is None and self.lm_head is None:  # tied head, read whole
            total += self.embed_tokens.weight.numel() * self.embed_tokens.weight.element_size()
        return total
