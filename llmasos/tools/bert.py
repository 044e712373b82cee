"""A BERT encoder in plain torch, loaded from a Hugging Face `model.safetensors` by weight name.

Enough of BERT for sentence embeddings (all-MiniLM-L6-v2): absolute positions, one segment, post-
LayerNorm blocks, exact (erf) GELU. Inference only; names follow the checkpoint so weights load as
they are. It lives here rather than in model/ because only the embedding tool uses it.
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path

import torch
import torch.nn.functional as F
from safetensors.torch import load_file
from torch import nn


@dataclass(frozen=True)
class BertConfig:
    vocab_size: int
    hidden_size: int
    num_hidden_layers: int
    num_attention_heads: int
    intermediate_size: int
    max_position_embeddings: int
    type_vocab_size: int
    layer_norm_eps: float

    @classmethod
    def from_file(cls, path: Path) -> BertConfig:
        raw = json.loads(Path(path).read_text())
        if raw.get("model_type") != "bert" or raw.get("hidden_act", "gelu") != "gelu":
            raise ValueError(f"{path} is not a BERT config with GELU activations")
        return cls(**{name: raw[name] for name in cls.__dataclass_fields__})


class BertLayer(nn.Module):
    def __init__(self, config: BertConfig) -> None:
        super().__init__()
        h = config.hidden_size
        self.num_heads = config.num_attention_heads
        self.query, self.key, self.value = nn.Linear(h, h), nn.Linear(h, h), nn.Linear(h, h)
        self.attn_out = nn.Linear(h, h)
        self.attn_norm = nn.LayerNorm(h, eps=config.layer_norm_eps)
        self.intermediate = nn.Linear(h, config.intermediate_size)
        self.output = nn.Linear(config.intermediate_size, h)
        self.output_norm = nn.LayerNorm(h, eps=config.layer_norm_eps)

    def forward(self, x: torch.Tensor, key_mask: torch.Tensor) -> torch.Tensor:
        B, T, H = x.shape

        def heads(t: torch.Tensor) -> torch.Tensor:
            return t.view(B, T, self.num_heads, H // self.num_heads).transpose(1, 2)  # (B, n_heads, T, d)

        # key_mask (B, 1, 1, T): padding keys are never attended to
        attn = F.scaled_dot_product_attention(
            heads(self.query(x)), heads(self.key(x)), heads(self.value(x)), key_mask
        )
        x = self.attn_norm(x + self.attn_out(attn.transpose(1, 2).reshape(B, T, H)))
        return self.output_norm(x + self.output(F.gelu(self.intermediate(x))))


class BertEncoder(nn.Module):
    """Token ids and an attention mask in, one hidden state per token out."""

    def __init__(self, config: BertConfig) -> None:
        super().__init__()
        h = config.hidden_size
        self.config = config
        self.word_embeddings = nn.Embedding(config.vocab_size, h)
        self.position_embeddings = nn.Embedding(config.max_position_embeddings, h)
        self.token_type_embeddings = nn.Embedding(config.type_vocab_size, h)
        self.embed_norm = nn.LayerNorm(h, eps=config.layer_norm_eps)
        self.layers = nn.ModuleList(BertLayer(config) for _ in range(config.num_hidden_layers))

    def forward(self, input_ids: torch.Tensor, attention_mask: torch.Tensor) -> torch.Tensor:
        T = input_ids.shape[1]
        positions = torch.arange(T, device=input_ids.device)
        x = (
            self.word_embeddings(input_ids)
            + self.position_embeddings(positions)
            + self.token_type_embeddings.weight[0]
        )
        x = self.embed_norm(x)
        key_mask = attention_mask.bool()[:, None, None, :]
        for layer in self.layers:
            x = layer(x, key_mask)
        return x  # (B, T, hidden)

    @classmethod
    def from_pretrained(cls, folder: Path) -> BertEncoder:
        """The encoder of `folder/config.json` with the weights of `folder/model.safetensors`."""
        model = cls(BertConfig.from_file(Path(folder) / "config.json"))
        weights = load_file(Path(folder) / "model.safetensors")
        prefix = "bert." if any(k.startswith("bert.") for k in weights) else ""
        state = {ours: weights[prefix + theirs] for ours, theirs in _checkpoint_names(model.config)}
        model.load_state_dict(state, strict=True)
        return model.eval()


def _checkpoint_names(config: BertConfig) -> list[tuple[str, str]]:
    """(our parameter name, the checkpoint's name) for every parameter."""
    names = [
        ("word_embeddings.weight", "embeddings.word_embeddings.weight"),
        ("position_embeddings.weight", "embeddings.position_embeddings.weight"),
        ("token_type_embeddings.weight", "embeddings.token_type_embeddings.weight"),
        ("embed_norm.weight", "embeddings.LayerNorm.weight"),
        ("embed_norm.bias", "embeddings.LayerNorm.bias"),
    ]
    per_layer = {
        "query": "attention.self.query",
        "key": "attention.self.key",
        "value": "attention.self.value",
        "attn_out": "attention.output.dense",
        "attn_norm": "attention.output.LayerNorm",
        "intermediate": "intermediate.dense",
        "output": "output.dense",
        "output_norm": "output.LayerNorm",
    }
    for i in range(config.num_hidden_layers):
        for ours, theirs in per_layer.items():
            for kind in ("weight", "bias"):
                names.append((f"layers.{i}.{ours}.{kind}", f"encoder.layer.{i}.{theirs}.{kind}"))
    return names
