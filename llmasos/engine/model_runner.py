"""The model runner owns the tensors: the model, the KV-cache pool, and each step's inputs.

It turns a scheduled batch into packed input tensors and attention metadata (once per step, not
per layer), runs the forward pass, and samples the next token of every sequence that reached
its last token.
"""

from __future__ import annotations

import logging

import torch

from llmasos.config import EngineConfig
from llmasos.engine.sampling import Sampler
from llmasos.engine.scheduler import ScheduledSequence
from llmasos.model.attention import AttentionMetadata
from llmasos.model.loader import LoadedModel

logger = logging.getLogger(__name__)


class ModelRunner:
    """Runs one model over a paged KV cache sized from the engine config's byte budget."""

    def __init__(self, loaded: LoadedModel, config: EngineConfig) -> None:
        self.model = loaded.model
        self.model_config = loaded.config
        param = next(self.model.parameters())
        self.device, self.dtype = param.device, param.dtype
        self.block_size = config.block_size
        bytes_per_block = config.block_size * self.model_config.kv_bytes_per_token(param.element_size())
        self.num_blocks = max(1, config.kv_cache_bytes // bytes_per_block)
        mc = self.model_config
        # (layers, K/V, slots, kv_heads, head_dim): KV bytes per token are exactly the theory's.
        self.kv_cache = torch.zeros(
            mc.num_layers,
            2,
            self.num_blocks * self.block_size,
            mc.num_kv_heads,
            mc.head_dim,
            dtype=self.dtype,
            device=self.device,
        )
        self.sampler = Sampler()
        logger.info(
            "KV cache: %d blocks of %d tokens (%.0f MiB)",
            self.num_blocks,
            self.block_size,
            self.kv_cache.numel() * self.kv_cache.element_size() / 2**20,
        )

    @property
    def kv_cache_bytes(self) -> int:
        return self.kv_cache.numel() * self.kv_cache.element_size()

    @torch.no_grad()
    def execute(self, batch: list[ScheduledSequence]) -> list[int]:
        """Run one step; return the sampled token of each sequence whose `samples` is true, in order."""
        input_ids, positions, meta, sample_index = self._prepare(batch)
        hidden = self.model(input_ids, positions, self.kv_cache, meta)
        sampling = [s for s in batch if s.samples]
        if not sampling:
            return []
        logits = self.model.compute_logits(hidden[sample_index])
        return self.sampler(logits, [s.seq.sampling for s in sampling], [s.seq.token_ids for s in sampling])

    def _prepare(
        self, batch: list[ScheduledSequence]
    ) -> tuple[torch.Tensor, torch.Tensor, AttentionMetadata, torch.Tensor]:
        bs = self.block_size
        input_ids: list[int] = []
        positions: list[int] = []
        query_lens: list[int] = []
        context_lens: list[int] = []
        sample_index: list[int] = []
        for item in batch:
            seq, start = item.seq, item.seq.num_computed_tokens
            end = start + item.num_new_tokens
            input_ids += seq.token_ids[start:end]
            positions += range(start, end)
            query_lens.append(item.num_new_tokens)
            context_lens.append(end)
            if item.samples:
                sample_index.append(len(input_ids) - 1)
        num_seqs, max_q, max_kv = len(batch), max(query_lens), max(context_lens)

        dev = self.device
        pos = torch.tensor(positions, dtype=torch.long)
        q_lens = torch.tensor(query_lens, dtype=torch.long)
        ctx_lens = torch.tensor(context_lens, dtype=torch.long)
        max_blocks = -(-max_kv // bs)
        tables = torch.zeros(num_seqs, max_blocks, dtype=torch.long)
        for row, item in enumerate(batch):
            table = item.seq.block_table[:max_blocks]
            tables[row, : len(table)] = torch.tensor(table, dtype=torch.long)
        # Flat cache slot of every context position of every sequence, (B, T_kv).
        kv_slots = (tables.unsqueeze(-1) * bs + torch.arange(bs)).view(num_seqs, -1)[:, :max_kv]
        # Slot of each new token: its sequence's slot at its position.
        seq_of_token = torch.repeat_interleave(torch.arange(num_seqs), q_lens)
        slot_mapping = kv_slots[seq_of_token, pos]
        # Padded (B, T_q) view of the packed tokens.
        offsets = torch.cumsum(q_lens, 0) - q_lens
        col = torch.arange(max_q)
        query_valid = col.unsqueeze(0) < q_lens.unsqueeze(1)
        query_index = torch.where(query_valid, offsets.unsqueeze(1) + col, 0)
        # Absolute position of each padded query; padding repeats the last real one so no row is
        # fully masked (a fully masked softmax row is NaN).
        q_pos = (ctx_lens - q_lens).unsqueeze(1) + torch.minimum(col.unsqueeze(0), (q_lens - 1).unsqueeze(1))
        k_pos = torch.arange(max_kv)
        mask = (k_pos.view(1, 1, -1) <= q_pos.unsqueeze(-1)) & (
            k_pos.view(1, 1, -1) < ctx_lens.view(-1, 1, 1)
        )
        meta = AttentionMetadata(
            slot_mapping=slot_mapping.to(dev),
            kv_slots=kv_slots.to(dev),
            query_index=query_index.to(dev),
            query_valid=query_valid.to(dev),
            mask=mask.unsqueeze(1).to(dev),
        )
        ids = torch.tensor(input_ids, dtype=torch.long, device=dev)
        return ids, pos.to(dev), meta, torch.tensor(sample_index, dtype=torch.long, device=dev)
