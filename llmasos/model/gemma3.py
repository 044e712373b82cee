"""Gemma 3 (text) as a pure torch module over the same paged KV cache, weights and engine as Llama.

What differs from Llama, each as Gemma 3's checkpoint and transformers' `Gemma3TextModel` do it:
- the embedding is scaled by sqrt(hidden) before the first layer;
- q and k are RMS-normed per head (QK-norm) before RoPE;
- the attention and FFN outputs are RMS-normed before their residual adds ("sandwich" norms);
- the FFN is GeGLU: gelu_tanh(gate) * up;
- five of every six layers attend to a sliding window (512 positions) with RoPE base 10,000, the sixth
  to the whole context with the file's base (1,000,000);
- scores are scaled by 1/sqrt(query_pre_attn_scalar) (head_dim, except for the 27B model);
- the final logits are tanh-capped when the model says so (Gemma 3 does not; Gemma 2 did).

Gemma's RMSNorm multiplies by (1 + w); llama.cpp's converter stores 1 + w in the GGUF already (its
norm weights average 13-26 here, never near 0), so the plain RMSNorm reads them as they are.
The C++ forward step implements the Llama layer only, so Gemma's layers always run as torch ops (the
projections still use the engine's int4/int8 kernels).
"""

from __future__ import annotations

from collections.abc import Callable

import torch
import torch.nn.functional as F
from torch import nn

from llmasos.model.attention import AttentionMetadata, paged_attention
from llmasos.model.config import ModelConfig, RopeScaling
from llmasos.model.layers import Linear, RMSNorm, apply_rope, rope_inv_freq, rope_rows
from llmasos.model.llama import LlamaModel

#: The module's names of Gemma's extra norms, and the GGUF names they load from.
GEMMA3_LAYER_NORMS = {
    "q_norm": "attn_q_norm",
    "k_norm": "attn_k_norm",
    "post_attn_norm": "post_attention_norm",
    "post_ffn_norm": "post_ffw_norm",
}

RopeTables = tuple[torch.Tensor, torch.Tensor]  # (cos, signed sin), each (N, heads, head_dim)


def geglu(gate_up: torch.Tensor) -> torch.Tensor:
    """GeGLU on a fused [gate | up] projection: gelu_tanh(gate) * up."""
    gate, up = gate_up.chunk(2, dim=-1)
    return F.gelu(gate, approximate="tanh") * up


class Gemma3DecoderLayer(nn.Module):
    """Pre-norm attention with QK-norm, then pre-norm GeGLU, each output normed before its residual."""

    def __init__(self, config: ModelConfig, index: int) -> None:
        super().__init__()
        self.num_heads = config.num_heads
        self.num_kv_heads = config.num_kv_heads
        self.head_dim = config.head_dim
        self.q_size, self.kv_size = config.q_size, config.kv_size
        self.sliding_window = config.sliding_window if config.is_sliding(index) else None
        eps = config.rms_norm_eps
        self.attn_norm = RMSNorm(config.hidden_size, eps)
        self.qkv_proj = Linear(config.hidden_size, config.q_size + 2 * config.kv_size, config.attention_bias)
        self.q_norm = RMSNorm(config.head_dim, eps)
        self.k_norm = RMSNorm(config.head_dim, eps)
        self.o_proj = Linear(config.q_size, config.hidden_size)
        self.post_attn_norm = RMSNorm(config.hidden_size, eps)
        self.ffn_norm = RMSNorm(config.hidden_size, eps)
        self.gate_up_proj = Linear(config.hidden_size, 2 * config.intermediate_size)
        self.down_proj = Linear(config.intermediate_size, config.hidden_size)
        self.post_ffn_norm = RMSNorm(config.hidden_size, eps)

    def forward(
        self,
        x: torch.Tensor,  # (N, hidden)
        rope: RopeTables,  # this layer's tables (local or global), q rows pre-scaled
        kv_cache: torch.Tensor,  # (2, num_slots, n_kv_heads, head_dim)
        meta: AttentionMetadata,
    ) -> torch.Tensor:
        n, heads, dim = x.shape[0], self.num_heads, self.head_dim
        cos, sin = rope
        qkv = self.qkv_proj(self.attn_norm(x)).to(cos.dtype)
        q = self.q_norm(qkv[:, : self.q_size].reshape(n, heads, dim))
        k = self.k_norm(qkv[:, self.q_size : self.q_size + self.kv_size].reshape(n, self.num_kv_heads, dim))
        v = qkv[:, self.q_size + self.kv_size :].reshape(n, self.num_kv_heads, dim)
        qk = apply_rope(torch.cat([q, k], dim=1), cos, sin)  # (N, heads + kv_heads, D)
        attn = paged_attention(
            qk[:, :heads], qk[:, heads:], v, kv_cache[0], kv_cache[1], meta, self.sliding_window
        )
        x = x + self.post_attn_norm(self.o_proj(attn))
        return x + self.post_ffn_norm(self.down_proj(geglu(self.gate_up_proj(self.ffn_norm(x)))))


class Gemma3Model(LlamaModel):
    """Token ids in, hidden states out, for Gemma 3; the Llama model's loading, quantizing and
    accounting apply unchanged (the layers keep Llama's projection names)."""

    def __init__(self, config: ModelConfig, *, rope_tables: bool = True) -> None:
        super().__init__(config, rope_tables=rope_tables)
        self.layers = nn.ModuleList(Gemma3DecoderLayer(config, i) for i in range(config.num_layers))
        self.embed_scale = config.hidden_size**0.5

    def set_rope_inv_freq(self, inv_freq: torch.Tensor) -> None:
        """Global layers rotate by `inv_freq` (the file's base), local layers by their own base.

        No tables: each step computes its positions' rows (`rope_rows`, the same bits as the tables'
        rows). Tables over the whole 32,768-position context were 134 MB of Gemma 3 270M's RSS (two
        bases, head_dim 256, cos and sin), more than its layers' weights; per step the rows cost two
        products and a cos and sin of (tokens x 128) values per base."""
        c = self.config
        local = rope_inv_freq(c.head_dim, c.rope_local_theta or c.rope_theta, RopeScaling())
        self.register_buffer("global_inv_freq", inv_freq, persistent=False)
        self.register_buffer("local_inv_freq", local.to(inv_freq.device), persistent=False)
        # Per-head factor of the rows: q heads carry attention's scale (Gemma's divisor may differ from
        # Llama's 1/sqrt(head_dim)), k heads 1.
        head_scale = torch.ones(c.num_heads + c.num_kv_heads, 1, device=inv_freq.device)
        head_scale[: c.num_heads] = c.attention_scale
        self.register_buffer("rope_head_scale", head_scale, persistent=False)

    def forward(
        self,
        input_ids: torch.Tensor,  # (N,)
        positions: torch.Tensor,  # (N,)
        kv_caches: torch.Tensor,  # (num_layers, 2, num_slots, n_kv_heads, head_dim)
        meta: AttentionMetadata,
    ) -> torch.Tensor:  # (N, hidden)
        x = self.embed_tokens(input_ids).float() * self.embed_scale
        global_rope = self._rope(self.global_inv_freq, positions, x.dtype)
        local_rope = self._rope(self.local_inv_freq, positions, x.dtype)
        for layer, kv_cache in zip(self.layers, kv_caches, strict=True):
            x = layer(x, local_rope if layer.sliding_window else global_rope, kv_cache, meta)
        return self.norm(x)

    def _rope(self, inv_freq: torch.Tensor, positions: torch.Tensor, dtype: torch.dtype) -> RopeTables:
        cos, sin = rope_rows(inv_freq, positions)  # (N, D) each
        scale = self.rope_head_scale  # (heads + kv_heads, 1)
        return (
            (cos.unsqueeze(1) * scale).to(dtype),  # (N, heads + kv_heads, D)
            (sin.unsqueeze(1) * scale).to(dtype),
        )

    def compute_logits(self, hidden: torch.Tensor) -> torch.Tensor:
        """Float32 logits, tanh-capped where the model caps them."""
        logits = super().compute_logits(hidden)
        cap = self.config.final_logit_softcapping
        return logits if cap is None else torch.tanh(logits / cap) * cap

    def _enable_native_step(self) -> None:
        """Never: the C++ forward step runs Llama's layer, which has none of Gemma's norms or windows."""


def gemma3_layer_state(
    weights: dict[str, torch.Tensor], i: int, take: Callable[[dict[str, torch.Tensor], str], torch.Tensor]
) -> dict[str, torch.Tensor]:
    """Layer `i`'s extra norms, taken out of the GGUF-named `weights` by `take`."""
    return {
        f"layers.{i}.{ours}.weight": take(weights, f"blk.{i}.{theirs}.weight")
        for ours, theirs in GEMMA3_LAYER_NORMS.items()
    }


def model_class(config: ModelConfig) -> type[LlamaModel]:
    """The module class of the config's architecture (Gemma 3's own, else Llama's)."""
    return Gemma3Model if config.architecture == "gemma3" else LlamaModel
