"""Helpers to compare the engine's model with Hugging Face transformers (the test-only reference)."""

from __future__ import annotations

from pathlib import Path
from unittest import mock

import gguf
import numpy as np
import torch

from llmasos.model.attention import AttentionMetadata
from llmasos.model.loader import LoadedModel


def full_logits(loaded: LoadedModel, ids: list[int]) -> torch.Tensor:
    """Logits (T, vocab) of one prompt through our model, its KV in contiguous slots."""
    cfg = loaded.config
    n = len(ids)
    kv = torch.zeros(cfg.num_layers, 2, n, cfg.num_kv_heads, cfg.head_dim)
    pos = torch.arange(n)
    meta = AttentionMetadata(
        slot_mapping=pos,
        kv_slots=pos.view(1, -1),
        query_index=pos.view(1, -1),
        query_valid=torch.ones(1, n, dtype=torch.bool),
        mask=(pos.view(1, 1, 1, -1) <= pos.view(1, 1, -1, 1)),
    )
    with torch.no_grad():
        return loaded.model.compute_logits(loaded.model(torch.tensor(ids), pos, kv, meta))


class _PlainViewReader(gguf.GGUFReader):
    """gguf-py's reader over a plain ndarray view of its memory map (the view keeps the map alive)."""

    @property
    def data(self) -> np.ndarray:
        return self._plain_data

    @data.setter
    def data(self, value: np.ndarray) -> None:
        self._plain_data = value.view(np.ndarray) if isinstance(value, np.memmap) else value


def hf_model_from_gguf(path: Path):
    """transformers' own GGUF loading and model, float32.

    gguf-py's reader parses the file's fields over a plain view of its memory map (`_PlainViewReader`: the
    same parsing, the same bytes) instead of the `np.memmap`: transformers parses the file twice, and for
    Gemma 3's 262,144-token vocabulary the memmap's per-slice Python hooks were over half of its ~110 s
    load on this machine."""
    from transformers import AutoModelForCausalLM
    from transformers.utils import logging as hf_logging

    hf_logging.set_verbosity_error()
    hf_logging.disable_progress_bar()
    with mock.patch("gguf.GGUFReader", _PlainViewReader):
        return AutoModelForCausalLM.from_pretrained(
            str(path.parent), gguf_file=path.name, dtype=torch.float32
        ).eval()


def hf_logits(model, ids: list[int]) -> torch.Tensor:
    with torch.no_grad():
        return model(torch.tensor([ids])).logits[0].float()


def hf_greedy(model, ids: list[int], max_new_tokens: int, eos_token_id: int | list[int]) -> list[int]:
    with torch.no_grad():
        out = model.generate(
            torch.tensor([ids]),
            attention_mask=torch.ones(1, len(ids), dtype=torch.long),
            max_new_tokens=max_new_tokens,
            do_sample=False,
            eos_token_id=eos_token_id,
            pad_token_id=0,
        )
    return out[0, len(ids) :].tolist()
