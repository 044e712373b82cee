"""The Llama family (Llama 2/3, Mistral, SmolLM, Qwen2) as a pure torch module over a paged KV cache.

Projections are fused as they are loaded: q/k/v into one `qkv_proj`, gate/up into one
`gate_up_proj`, so a layer is two matmuls in, two out.
"""

from __future__ import annotations

import torch
from torch import nn

from llmasos.model.attention import AttentionMetadata, paged_attention
from llmasos.model.config import ModelConfig
from llmasos.model.layers import Linear, RMSNorm, apply_rope, rope_cos_sin, rope_inv_freq, swiglu


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
        cos: torch.Tensor,  # (N, 1, head_dim)
        sin: torch.Tensor,
        kv_cache: torch.Tensor,  # (2, num_slots, n_kv_heads, head_dim)
        meta: AttentionMetadata,
    ) -> torch.Tensor:
        n = x.shape[0]
        qkv = self.qkv_proj(self.attn_norm(x))
        q, k, v = qkv.split([self.q_size, self.kv_size, self.kv_size], dim=-1)
        q = apply_rope(q.view(n, self.num_heads, self.head_dim), cos, sin)
        k = apply_rope(k.view(n, self.num_kv_heads, self.head_dim), cos, sin)
        v = v.view(n, self.num_kv_heads, self.head_dim)
        x = x + self.o_proj(paged_attention(q, k, v, kv_cache[0], kv_cache[1], meta))
        return x + self.down_proj(swiglu(self.gate_up_proj(self.ffn_norm(x))))


class LlamaModel(nn.Module):
    """Token ids in, hidden states out; `compute_logits` applies the (possibly tied) LM head."""

    def __init__(self, config: ModelConfig) -> None:
        super().__init__()
        self.config = config
        self.embed_tokens = nn.Embedding(config.vocab_size, config.hidden_size)
        self.embed_tokens.weight.requires_grad_(False)
        self.layers = nn.ModuleList(LlamaDecoderLayer(config) for _ in range(config.num_layers))
        self.norm = RMSNorm(config.hidden_size, config.rms_norm_eps)
        self.lm_head = None if config.tie_word_embeddings else Linear(config.hidden_size, config.vocab_size)
        inv_freq = rope_inv_freq(config.head_dim, config.rope_theta, config.rope_scaling)
        self.set_rope_inv_freq(inv_freq)

    def set_rope_inv_freq(self, inv_freq: torch.Tensor) -> None:
        """Install rotary frequencies (GGUF files may ship precomputed llama3 factors)."""
        cos, sin = rope_cos_sin(inv_freq, self.config.context_length)
        self.register_buffer("rope_cos", cos, persistent=False)
        self.register_buffer("rope_sin", sin, persistent=False)

    def forward(
        self,
        input_ids: torch.Tensor,  # (N,)
        positions: torch.Tensor,  # (N,)
        kv_caches: torch.Tensor,  # (num_layers, 2, num_slots, n_kv_heads, head_dim)
        meta: AttentionMetadata,
    ) -> torch.Tensor:  # (N, hidden)
        x = self.embed_tokens(input_ids)
        cos = self.rope_cos[positions].unsqueeze(1).to(x.dtype)  # (N, 1, head_dim)
        sin = self.rope_sin[positions].unsqueeze(1).to(x.dtype)
        for layer, kv_cache in zip(self.layers, kv_caches, strict=True):
            x = layer(x, cos, sin, kv_cache, meta)
        return self.norm(x)

    def compute_logits(self, hidden: torch.Tensor) -> torch.Tensor:
        """Float32 logits (n, vocab) for the given hidden states."""
        weight = self.embed_tokens.weight if self.lm_head is None else self.lm_head.weight
        return torch.nn.functional.linear(hidden, weight).float()
