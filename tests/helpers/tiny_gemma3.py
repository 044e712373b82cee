"""A tiny random Gemma 3: transformers' own `Gemma3ForCausalLM` as the reference, and the same weights
written as GGUF the way llama.cpp's converter writes them (its names, every norm stored as 1 + w).

The norms are random (Gemma initialises them to 0, which would hide a missing or doubled "+ 1"), and
the layer count passes one global layer, so both RoPE bases and both kinds of attention are used.
"""

from __future__ import annotations

from pathlib import Path

import gguf
import numpy as np
import torch

from tests.helpers.tiny_tokenizer import add_tiny_tokenizer

F32 = gguf.GGMLQuantizationType.F32

_HF_TO_GGUF = {
    "input_layernorm": "attn_norm",
    "self_attn.q_proj": "attn_q",
    "self_attn.k_proj": "attn_k",
    "self_attn.v_proj": "attn_v",
    "self_attn.o_proj": "attn_output",
    "self_attn.q_norm": "attn_q_norm",
    "self_attn.k_norm": "attn_k_norm",
    "post_attention_layernorm": "post_attention_norm",
    "pre_feedforward_layernorm": "ffn_norm",
    "post_feedforward_layernorm": "post_ffw_norm",
    "mlp.gate_proj": "ffn_gate",
    "mlp.up_proj": "ffn_up",
    "mlp.down_proj": "ffn_down",
}


def tiny_gemma3_reference(vocab_size: int, *, sliding_window: int, layers: int = 7, seed: int = 0):
    """A random float32 Gemma3ForCausalLM (transformers) with clear greedy winners."""
    from transformers import Gemma3ForCausalLM, Gemma3TextConfig

    torch.manual_seed(seed)
    config = Gemma3TextConfig(
        vocab_size=vocab_size,
        hidden_size=64,
        intermediate_size=128,
        num_hidden_layers=layers,
        num_attention_heads=4,
        num_key_value_heads=2,
        head_dim=16,
        query_pre_attn_scalar=16,
        max_position_embeddings=256,
        sliding_window=sliding_window,
        layer_types=["full_attention" if (i + 1) % 6 == 0 else "sliding_attention" for i in range(layers)],
        rope_parameters={
            "full_attention": {"rope_type": "default", "rope_theta": 1_000_000.0},
            "sliding_attention": {"rope_type": "default", "rope_theta": 10_000.0},
        },
        rms_norm_eps=1e-6,
        tie_word_embeddings=True,
        attn_implementation="eager",
    )
    model = Gemma3ForCausalLM(config).eval()
    with torch.no_grad():
        for name, param in model.named_parameters():
            if name.endswith("norm.weight"):
                param.copy_(torch.randn_like(param) * 0.3)
            elif name.endswith("embed_tokens.weight"):
                param.copy_(torch.randn_like(param))
            else:
                param.copy_(torch.randn_like(param) * 0.15)
    return model


def write_tiny_gemma3_gguf(
    path: Path,
    *,
    sliding_window: int = 4,
    seed: int = 0,
    qtype: gguf.GGMLQuantizationType = F32,
    context_length: int | None = None,
):
    """Write the tiny Gemma 3 as GGUF; returns (path, the transformers model with the same weights).

    context_length: the file's, where it should differ from the reference's 256 positions.
    qtype: the block format of every matrix (projections and the embedding; norms stay float32), as a
    quantized file stores them; the transformers model then holds the float32 weights, not their blocks."""
    writer = gguf.GGUFWriter(str(path), "gemma3")
    vocab_size = add_tiny_tokenizer(writer, chat_template=False)  # a base model, as Gemma 3 270M is
    model = tiny_gemma3_reference(vocab_size, sliding_window=sliding_window, seed=seed)
    c = model.config
    writer.add_name("tiny-gemma3")
    writer.add_block_count(c.num_hidden_layers)
    writer.add_context_length(context_length or c.max_position_embeddings)
    writer.add_embedding_length(c.hidden_size)
    writer.add_feed_forward_length(c.intermediate_size)
    writer.add_head_count(c.num_attention_heads)
    writer.add_head_count_kv(c.num_key_value_heads)
    writer.add_key_length(c.head_dim)
    writer.add_value_length(c.head_dim)
    writer.add_layer_norm_rms_eps(c.rms_norm_eps)
    writer.add_rope_freq_base(1_000_000.0)
    writer.add_sliding_window(sliding_window)
    writer.add_vocab_size(vocab_size)
    for hf_name, value in model.state_dict().items():
        if hf_name == "lm_head.weight":
            continue  # tied
        array = value.float().numpy()
        if hf_name.endswith("norm.weight"):
            array = array + 1.0  # llama.cpp's converter stores Gemma's (1 + w)
        array = np.ascontiguousarray(array, dtype=np.float32)
        if qtype != F32 and array.ndim == 2:
            packed = gguf.quants.quantize(array, qtype)
            writer.add_tensor(_gguf_name(hf_name), packed, raw_shape=packed.shape, raw_dtype=qtype)
        else:
            writer.add_tensor(_gguf_name(hf_name), array)
    writer.write_header_to_file()
    writer.write_kv_data_to_file()
    writer.write_tensors_to_file()
    writer.close()
    return path, model


def _gguf_name(hf_name: str) -> str:
    if hf_name == "model.embed_tokens.weight":
        return "token_embd.weight"
    if hf_name == "model.norm.weight":
        return "output_norm.weight"
    _, _, i, rest = hf_name.split(".", 3)  # model.layers.{i}.{rest}
    module = rest.removesuffix(".weight")
    return f"blk.{i}.{_HF_TO_GGUF[module]}.weight"
