"""The model runner owns the tensors: the model, the KV-cache pool, and each step's inputs.

It turns a scheduled batch into packed input tensors and attention metadata (once per step, not
per layer), runs the forward pass, and samples the next token of every sequence that reached
its last token.
"""

from __future__ import annotations

import gc
import logging
import mmap
from dataclasses import dataclass

import numpy as np
import torch

from llmasos.config import EngineConfig
from llmasos.engine.sampling import Sampler, SamplerOutput
from llmasos.engine.scheduler import ScheduledSequence
from llmasos.engine.swap_space import SwapHandle, SwapSpace
from llmasos.model.attention import AttentionMetadata
from llmasos.model.heap import trim_heap
from llmasos.model.loader import LoadedModel
from llmasos.model.weight_formats import resolve_weight_format

logger = logging.getLogger(__name__)


KV_CACHE_DTYPES = {"float32": torch.float32, "bfloat16": torch.bfloat16}


def return_freed_memory() -> None:
    """Collect garbage, then hand the C heap's free pages back to the OS (glibc's `malloc_trim`).

    Why: tensors below glibc's mmap threshold (which rises to 32 MB once large blocks are freed) live
    in the heap, and freeing them leaves its pages resident: after SmolLM2's float weights were
    dropped, 128 MB more were returned by the trim than by the frees."""
    gc.collect()
    trim_heap()


def resolve_kv_cache_dtype(kv_cache_dtype: str, weight_format: str, model_dtype: torch.dtype) -> torch.dtype:
    """The KV cache's dtype for EngineConfig.kv_cache_dtype: `auto` is bfloat16 with int4, int8 or
    bfloat16 weights (already rounded far beyond bfloat16's 8-bit mantissa), else the model's dtype."""
    if kv_cache_dtype == "auto":
        return torch.bfloat16 if weight_format in ("int4", "int8", "bfloat16") else model_dtype
    if kv_cache_dtype not in KV_CACHE_DTYPES:
        raise ValueError(f"unknown kv_cache_dtype {kv_cache_dtype!r}; use auto, float32 or bfloat16")
    return KV_CACHE_DTYPES[kv_cache_dtype]


def resolve_formats(config: EngineConfig, loaded: LoadedModel) -> tuple[str, torch.dtype]:
    """(weight format, KV cache dtype) of an engine running `loaded` under `config`.

    An explicit dtype asks for dense weights in it (exact against references); "auto" lets the weight
    format pick the fastest path for the device."""
    param = next(loaded.model.parameters())
    weight_format = resolve_weight_format(config.weight_format, param.device)  # validates
    if config.weight_format == "auto" and config.dtype != "auto":
        weight_format = "native"
    return weight_format, resolve_kv_cache_dtype(config.kv_cache_dtype, weight_format, param.dtype)


def kv_pool_blocks(config: EngineConfig, context_length: int, bytes_per_block: int) -> int:
    """Blocks of the KV pool: `kv_cache_bytes` worth, but never more than every sequence of a full
    batch (max_num_seqs) at the model's full context could fill."""
    most_useful = config.max_num_seqs * -(-context_length // config.block_size)
    return max(1, min(config.kv_cache_bytes // bytes_per_block, most_useful))


def idle_cache_blocks(config: EngineConfig, bytes_per_block: int) -> int:
    """Most idle blocks the prefix cache keeps (BlockManager's `max_idle_cached_blocks`): the config's
    `prefix_cache_bytes` where set, else `prefix_cache_tokens`, in whole blocks."""
    if config.prefix_cache_bytes is not None:
        return config.prefix_cache_bytes // bytes_per_block
    return -(-config.prefix_cache_tokens // config.block_size)


def allocate_kv_pool(shape: tuple[int, ...], dtype: torch.dtype, device: torch.device) -> torch.Tensor:
    """A zeroed KV pool. On the CPU it lies in an anonymous memory map, whose pages the OS gives (zeroed)
    when a block is first written, so the pool grows in resident memory with the KV actually held
    rather than up front: torch.zeros touched all 512 MB of it at every load, for a model that may
    never hold more than a few thousand tokens."""
    if device.type != "cpu":
        return torch.zeros(shape, dtype=dtype, device=device)
    nbytes = torch.Size(shape).numel() * torch.empty((), dtype=dtype).element_size()
    # Private: Python's anonymous mmap is MAP_SHARED by default, whose pages become resident (as shared
    # memory) when only read, and which MADV_DONTNEED does not give back.
    pages = mmap.mmap(-1, max(nbytes, 1), flags=mmap.MAP_PRIVATE | mmap.MAP_ANONYMOUS)
    return torch.frombuffer(pages, dtype=dtype, count=torch.Size(shape).numel()).view(shape)


def packed_weight_format(config: EngineConfig, device: torch.device) -> str | None:
    """The format the loader should pack a file's weights in directly (no float32 copy of the model):
    "int4" where `resolve_formats` would pick it, else None (the engine converts float weights itself)."""
    weight_format = resolve_weight_format(config.weight_format, device)
    if config.weight_format == "auto" and config.dtype != "auto":
        return None
    return weight_format if weight_format == "int4" else None


def kv_bytes_per_token(config: EngineConfig, loaded: LoadedModel) -> int:
    """KV cache bytes per token of context for an engine running `loaded` under `config`."""
    kv_dtype = resolve_formats(config, loaded)[1]
    return loaded.config.kv_bytes_per_token(torch.empty((), dtype=kv_dtype).element_size())


class ModelRunner:
    """Runs one model over a paged KV cache sized from the engine config's byte budget."""

    def __init__(self, loaded: LoadedModel, config: EngineConfig, *, owns_load: bool = False) -> None:
        self.model_config = loaded.config
        param = next(loaded.model.parameters())
        self.device, self.dtype = param.device, param.dtype
        self.weight_format, self.kv_dtype = resolve_formats(config, loaded)
        dense_same = self.weight_format in ("native", str(self.dtype).removeprefix("torch."))
        # A converted copy: `loaded.model` keeps its float weights for other engines that share it.
        self.model = (
            loaded.model
            if dense_same
            else loaded.model.quantize(self.weight_format, keep_dense=config.dense_prefill_weights)
        )
        if owns_load and self.model is not loaded.model:
            # Keep only the converted weights, and give the float originals' memory back before the
            # KV pool and swap reserve are allocated: with both alive at once, SmolLM2's engine peaked
            # at 1,650 MB RSS during load against 1,370 after it.
            loaded.model = self.model
            return_freed_memory()
        elif owns_load and not loaded.read_from_cache:
            # Packed at load (packed_build.py): its temporaries' heap pages go back too.
            return_freed_memory()
        elif owns_load:
            # A load from the packed cache leaves no garbage worth a collection (0.23-0.30 s of such a
            # load), but the heap keeps the pages its parsing freed (the tokenizer's JSON, the header):
            # 25 MB of SmolLM2's (RSS after load 410 -> 386 MB), returned in 1.6 ms.
            trim_heap()
        logger.info(
            "weights: %s, %.0f MB read per decode token",
            self.weight_format,
            self.model.weight_bytes_per_token() / 1e6,
        )
        self.weight_bytes = self.model.held_bytes()  # the weights are fixed from here on
        self.block_size = config.block_size
        bytes_per_block = config.block_size * kv_bytes_per_token(config, loaded)
        mc = self.model_config
        self.num_blocks = kv_pool_blocks(config, mc.context_length, bytes_per_block)
        # (layers, K/V, slots, kv_heads, head_dim): KV bytes per token are exactly the theory's.
        shape = (mc.num_layers, 2, self.num_blocks * self.block_size, mc.num_kv_heads, mc.head_dim)
        self.kv_cache = allocate_kv_pool(shape, self.kv_dtype, self.device)
        self.sampler = Sampler()
        # Host memory for suspended sequences' KV; pinned on CUDA so copies are DMA transfers.
        self.swap_space = SwapSpace(
            (mc.num_layers, 2, self.block_size, mc.num_kv_heads, mc.head_dim),
            self.kv_dtype,
            pin=self.device.type == "cuda",
            reserve_bytes=min(config.swap_reserve_bytes, self.kv_cache_bytes),  # never more than the pool
        )
        logger.info(
            "KV cache: %d blocks of %d tokens, %s (%.0f MiB)",
            self.num_blocks,
            self.block_size,
            str(self.kv_dtype).removeprefix("torch."),
            self.kv_cache.numel() * self.kv_cache.element_size() / 2**20,
        )

    def held_bytes(self, num_kv_blocks: int) -> int:
        """Bytes this runner holds with `num_kv_blocks` blocks of its KV pool touched: the model's
        tensors, those blocks (the pool is mapped lazily: untouched blocks hold no memory) and the swap
        space's blocks."""
        swap = self.swap_space.num_blocks * self.swap_space.bytes_per_block
        return self.weight_bytes + num_kv_blocks * self.kv_block_bytes + swap

    @property
    def kv_block_bytes(self) -> int:
        return self.kv_cache_bytes // self.num_blocks

    @property
    def kv_cache_bytes(self) -> int:
        return self.kv_cache.numel() * self.kv_cache.element_size()

    @property
    def kv_blocks(self) -> torch.Tensor:
        """The pool viewed by block: (layers, 2, num_blocks, block_size, kv_heads, head_dim)."""
        shape = self.kv_cache.shape
        return self.kv_cache.view(shape[0], 2, self.num_blocks, self.block_size, *shape[3:])

    @torch.no_grad()
    def swap_out(self, block_table: list[int], num_tokens: int) -> SwapHandle:
        """Copy the blocks holding a sequence's first `num_tokens` tokens to the swap space."""
        return self.swap_space.swap_out(self.kv_blocks, block_table[: -(-num_tokens // self.block_size)])

    @torch.no_grad()
    def swap_in(self, block_table: list[int], handle: SwapHandle) -> None:
        """Copy a sequence's swapped blocks into its (new) blocks, and free its swap blocks."""
        self.swap_space.swap_in(handle, self.kv_blocks, block_table)

    def release_swap(self, handle: SwapHandle) -> None:
        self.swap_space.release(handle)

    def release_idle_memory(self) -> None:
        """Give back what an engine with nothing to run holds for no one: swap chunks beyond the
        reserve, and the C heap's free pages (a prefill's or a large batch's activations). The engine
        calls it when its last request ends, as a server between loads; the prefix cache's blocks
        stay (they are what a next request may reuse)."""
        self.swap_space.shrink()
        trim_heap()

    @torch.no_grad()
    def execute(self, batch: list[ScheduledSequence]) -> SamplerOutput:
        """Run one step; return the sampled token (and logprobs, if asked) of each sequence whose
        `samples` is true, in order."""
        input_ids, positions, meta, sample_index = self._prepare(batch)
        hidden = self.model(input_ids, positions, self.kv_cache, meta)
        sampling = [s for s in batch if s.samples]
        if not sampling:
            return SamplerOutput([], [])
        logits = self.model.compute_logits(hidden[sample_index])
        seqs = [s.seq for s in sampling]
        outputs = [q.output_token_ids for q in seqs] if any(q.params.needs_output_ids for q in seqs) else None
        return self.sampler(logits, [q.sampling for q in seqs], [q.token_ids for q in seqs], outputs)

    def _prepare(
        self, batch: list[ScheduledSequence]
    ) -> tuple[torch.Tensor, torch.Tensor, AttentionMetadata, torch.Tensor]:
        """Packed inputs and attention metadata of one step, built on the host with numpy.

        Every index tensor is made once here and moved with one `.to(device)`; layers only read
        them. Decode steps (one new token per sequence) get the short metadata of the fast path."""
        tokens = pack_tokens(batch)
        kv_slots = context_slots(batch, tokens.context_lens, self.block_size)
        # Slot of each new token: its sequence's slot at its position.
        slot_mapping = kv_slots[np.repeat(np.arange(len(batch)), tokens.query_lens), tokens.positions]
        if tokens.max_query_len == 1:
            meta = self._decode_metadata(slot_mapping, kv_slots, tokens.context_lens)
        else:
            meta = self._chunk_metadata(slot_mapping, kv_slots, tokens.query_lens, tokens.context_lens)
        dev = self.device
        ids = torch.tensor(tokens.input_ids, dtype=torch.long, device=dev)
        positions_t = torch.from_numpy(tokens.positions).to(dev)
        return ids, positions_t, meta, torch.tensor(tokens.sample_index, dtype=torch.long, device=dev)

    def _decode_metadata(
        self, slot_mapping: np.ndarray, kv_slots: np.ndarray, ctx_lens: np.ndarray
    ) -> AttentionMetadata:
        """The fast path's metadata: one query per sequence, keys masked only past each context."""
        dev = self.device
        num_seqs, max_kv = kv_slots.shape
        bias = None
        if ctx_lens.min() < max_kv:  # padded keys of shorter sequences get -inf
            padded = np.arange(max_kv)[None, :] >= ctx_lens[:, None]
            bias = torch.from_numpy(np.where(padded, -np.inf, 0.0).astype(np.float32))
            bias = bias.view(num_seqs, 1, 1, max_kv).to(dev, self.dtype)
        return AttentionMetadata(
            slot_mapping=torch.from_numpy(slot_mapping).to(dev),
            kv_slots=torch.from_numpy(kv_slots).to(dev),
            query_index=None,
            query_valid=None,
            mask=None,
            decode=True,
            decode_bias=bias,
            context_lens=torch.from_numpy(ctx_lens).to(dev),
        )

    def _chunk_metadata(
        self, slot_mapping: np.ndarray, kv_slots: np.ndarray, q_lens: np.ndarray, ctx_lens: np.ndarray
    ) -> AttentionMetadata:
        """Metadata of a step where some sequence computes several tokens (a prompt or a chunk of one):
        a padded (B, T_q) view of the packed tokens and a causal mask over each context."""
        dev = self.device
        max_kv = kv_slots.shape[1]
        max_q = int(q_lens.max())
        # Padded (B, T_q) view of the packed tokens.
        offsets = np.cumsum(q_lens) - q_lens
        col = np.arange(max_q)
        query_valid = col[None, :] < q_lens[:, None]
        query_index = np.where(query_valid, offsets[:, None] + col, 0)
        # Absolute position of each padded query; padding repeats the last real one so no row
        # is fully masked (a fully masked softmax row is NaN).
        q_pos = (ctx_lens - q_lens)[:, None] + np.minimum(col[None, :], (q_lens - 1)[:, None])
        k_pos = np.arange(max_kv)
        mask = (k_pos[None, None, :] <= q_pos[:, :, None]) & (k_pos[None, None, :] < ctx_lens[:, None, None])
        out_index = np.flatnonzero(query_valid)  # row of each packed token in (B * T_q)
        return AttentionMetadata(
            slot_mapping=torch.from_numpy(slot_mapping).to(dev),
            kv_slots=torch.from_numpy(kv_slots).to(dev),
            query_index=torch.from_numpy(query_index).to(dev),
            query_valid=torch.from_numpy(query_valid).to(dev),
            mask=torch.from_numpy(mask[:, None]).to(dev),
            out_index=torch.from_numpy(out_index).to(dev),
            context_lens=torch.from_numpy(ctx_lens).to(dev),
            query_start=torch.from_numpy(np.concatenate([[0], np.cumsum(q_lens)])).to(dev),
        )


@dataclass
class PackedTokens:
    """One step's new tokens, every sequence's after the last: what the model reads, and per sequence
    how many tokens it adds (query) to how long a context."""

    input_ids: list[int]
    positions: np.ndarray  # (N,) int64, the absolute position of each packed token
    query_lens: np.ndarray  # (B,) int64
    context_lens: np.ndarray  # (B,) int64, computed tokens after this step
    sample_index: list[int]  # packed index of the last token of each sequence that samples

    @property
    def max_query_len(self) -> int:
        return int(self.query_lens.max())


def pack_tokens(batch: list[ScheduledSequence]) -> PackedTokens:
    """The batch's new tokens packed one sequence after another, with their positions."""
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
    return PackedTokens(
        input_ids=input_ids,
        positions=np.asarray(positions, dtype=np.int64),
        query_lens=np.asarray(query_lens, dtype=np.int64),
        context_lens=np.asarray(context_lens, dtype=np.int64),
        sample_index=sample_index,
    )


def context_slots(batch: list[ScheduledSequence], context_lens: np.ndarray, block_size: int) -> np.ndarray:
    """Flat cache slot of every context position of every sequence, (B, T_kv), from the block tables
    (positions past a shorter sequence's context point at its table's padding, block 0)."""
    max_kv = int(context_lens.max())
    max_blocks = -(-max_kv // block_size)
    tables = np.zeros((len(batch), max_blocks), dtype=np.int64)
    for row, item in enumerate(batch):
        table = item.seq.block_table[:max_blocks]
        tables[row, : len(table)] = table
    return (tables[:, :, None] * block_size + np.arange(block_size)).reshape(len(batch), -1)[:, :max_kv]
