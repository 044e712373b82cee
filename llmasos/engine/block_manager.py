"""KV-cache blocks: a free list, reference counts, and a prefix cache. Mechanism only.

Prefix sharing: every full block that has been computed is named by a chained hash of its
tokens (the hash of the previous block, the cache namespace, and its own token ids). A new
sequence whose prompt starts with blocks of those names takes them copy-free (reference count
+1) and skips their computation. Blocks whose count drops to zero keep their name and stay in the
free list, ordered least-recently-freed first, so they are reused until the pool needs them.

The idle named blocks are bounded (`max_idle_cached_blocks`): past the bound, the least recently
freed one is overwritten before a block that was never written is taken. The pool is mapped lazily,
so a never-written block costs no memory until it is; without the bound every finished sequence's
generated blocks stayed named and each new one took fresh pages, so a server's resident memory
grew by the whole pool (598 to 910 MB over `benchmarks/server_load.py`'s 433 requests, on its way
to +512 MB) to hold a cache of answers that are rarely asked again.

The namespace partitions the cache: sequences of different namespaces never share a block,
because a shared prefix cache leaks, through timing, what another tenant's prompts start with
(vLLM CVE-2025-46570). The kernel gives each app its own namespace unless the app opts in.
"""

from __future__ import annotations

import hashlib
from collections import OrderedDict

from llmasos.engine.sequence import Sequence


def block_hash(parent: bytes | None, namespace: str, token_ids: list[int]) -> bytes:
    """Name of a full block: sha256 over its parent's name, the namespace and its tokens."""
    digest = hashlib.sha256(parent or b"root")
    digest.update(namespace.encode())
    digest.update(b"\0" + ",".join(map(str, token_ids)).encode())
    return digest.digest()


class BlockManager:
    """Hands out fixed-size KV blocks to sequences, shares cached prefixes, takes blocks back."""

    def __init__(
        self,
        num_blocks: int,
        block_size: int,
        enable_prefix_caching: bool = True,
        max_idle_cached_blocks: int | None = None,
    ) -> None:
        """`max_idle_cached_blocks`: most named blocks kept free for reuse before a never-written
        block is taken instead of the least recently freed of them (None: no bound but the pool)."""
        self.num_blocks = num_blocks
        self.max_idle_cached_blocks = num_blocks if max_idle_cached_blocks is None else max_idle_cached_blocks
        self.block_size = block_size
        self.enable_prefix_caching = enable_prefix_caching
        self.ref_counts = [0] * num_blocks
        # Free blocks in reuse order: unnamed ones first, then named ones least recently freed first.
        self.free_block_ids: OrderedDict[int, None] = OrderedDict.fromkeys(range(num_blocks))
        self.hash_of_block: list[bytes | None] = [None] * num_blocks
        self.block_of_hash: dict[bytes, int] = {}
        # Free blocks that still hold a name (their reference count is 0), least recently freed first.
        self.idle_cached_block_ids: OrderedDict[int, None] = OrderedDict()
        # Blocks ever handed out: the pool's memory is mapped lazily (model_runner.allocate_kv_pool), so
        # these are the blocks whose pages are resident. Fresh blocks are taken in id order after every
        # freed unnamed one, so the touched blocks are always ids below this count.
        self.num_touched_blocks = 0
        self.num_prefix_queries = 0  # prompt tokens looked up in the prefix cache
        self.num_prefix_hits = 0  # of those, tokens found

    # ---- counts --------------------------------------------------------------------------

    @property
    def num_free_blocks(self) -> int:
        return len(self.free_block_ids)

    @property
    def num_used_blocks(self) -> int:
        return self.num_blocks - self.num_free_blocks

    @property
    def num_cached_blocks(self) -> int:
        """Named blocks, in use or free but still reusable."""
        return len(self.block_of_hash)

    def blocks_for(self, num_tokens: int) -> int:
        """Blocks that hold `num_tokens` tokens."""
        return -(-num_tokens // self.block_size)

    def num_new_blocks(self, seq: Sequence, num_new_tokens: int) -> int:
        """Blocks `seq` must gain to hold its computed tokens plus `num_new_tokens` more."""
        needed = self.blocks_for(seq.num_computed_tokens + num_new_tokens)
        return max(0, needed - len(seq.block_table))

    def can_allocate(self, seq: Sequence, num_new_tokens: int) -> bool:
        return self.num_new_blocks(seq, num_new_tokens) <= self.num_free_blocks

    # ---- allocation ----------------------------------------------------------------------

    def allocate(self, seq: Sequence, num_new_tokens: int) -> None:
        """Grow `seq`'s block table to fit `num_new_tokens` more tokens. Call can_allocate first."""
        count = self.num_new_blocks(seq, num_new_tokens)
        if count > self.num_free_blocks:
            raise RuntimeError(f"allocate {count} blocks with {self.num_free_blocks} free")
        for _ in range(count):
            block_id = self._next_free_block()
            self._forget(block_id)  # its old contents are about to be overwritten
            self.ref_counts[block_id] = 1
            self.num_touched_blocks = max(self.num_touched_blocks, block_id + 1)
            seq.block_table.append(block_id)

    def free(self, seq: Sequence) -> None:
        """Return every block of `seq`, whose computed tokens are gone from the pool with them.
        Named blocks stay reusable until the pool needs them."""
        for block_id in reversed(seq.block_table):
            self.ref_counts[block_id] -= 1
            if self.ref_counts[block_id] == 0:
                self.free_block_ids[block_id] = None
                if self.hash_of_block[block_id] is None:
                    self.free_block_ids.move_to_end(block_id, last=False)
                else:
                    self.idle_cached_block_ids[block_id] = None
        seq.block_table = []
        seq.block_hashes = []
        seq.num_computed_tokens = 0

    # ---- prefix cache --------------------------------------------------------------------

    def match_prefix(self, seq: Sequence) -> list[int]:
        """Cached blocks that hold the start of `seq`'s tokens (at least one token is left to
        compute, because the last prompt token's logits are needed)."""
        if not self.enable_prefix_caching:
            return []
        bs, hits, parent = self.block_size, [], None
        for index in range((seq.num_tokens - 1) // bs):
            parent = block_hash(parent, seq.cache_namespace, seq.token_ids[index * bs : (index + 1) * bs])
            block_id = self.block_of_hash.get(parent)
            if block_id is None:
                break
            hits.append(block_id)
        return hits

    def num_blocks_to_admit(self, seq: Sequence, hits: list[int], num_new_tokens: int) -> int:
        """Free blocks consumed by admitting `seq` with cached prefix `hits` and `num_new_tokens` to
        compute: fresh blocks, plus hits that sit unreferenced in the free list."""
        total = self.blocks_for(seq.num_computed_tokens + len(hits) * self.block_size + num_new_tokens)
        fresh = total - len(seq.block_table) - len(hits)
        return max(0, fresh) + sum(1 for b in hits if self.ref_counts[b] == 0)

    def take_prefix(self, seq: Sequence, hits: list[int]) -> None:
        """Give a new sequence the cached blocks `hits` as the start of its block table."""
        if seq.block_table or seq.num_computed_tokens:
            raise RuntimeError("take_prefix on a sequence that already holds KV")
        self.num_prefix_queries += seq.num_tokens
        for block_id in hits:
            if self.ref_counts[block_id] == 0:
                del self.free_block_ids[block_id]
                self.idle_cached_block_ids.pop(block_id, None)
            self.ref_counts[block_id] += 1
            seq.block_table.append(block_id)
            seq.block_hashes.append(self.hash_of_block[block_id])  # type: ignore[arg-type]
        seq.num_computed_tokens = seq.num_cached_tokens = len(hits) * self.block_size
        self.num_prefix_hits += seq.num_cached_tokens

    def register_computed_blocks(self, seq: Sequence) -> None:
        """Name `seq`'s blocks that have become full and computed, so later sequences can share them."""
        if not self.enable_prefix_caching:
            return
        bs = self.block_size
        for index in range(len(seq.block_hashes), seq.num_computed_tokens // bs):
            parent = seq.block_hashes[-1] if seq.block_hashes else None
            name = block_hash(parent, seq.cache_namespace, seq.token_ids[index * bs : (index + 1) * bs])
            seq.block_hashes.append(name)
            block_id = seq.block_table[index]
            if name not in self.block_of_hash and self.hash_of_block[block_id] is None:
                self.block_of_hash[name] = block_id
                self.hash_of_block[block_id] = name

    def reset_prefix_cache(self) -> None:
        """Forget every name (e.g. after the weights change). Blocks in use are unaffected."""
        self.block_of_hash.clear()
        self.hash_of_block = [None] * self.num_blocks
        for block_id in self.idle_cached_block_ids:  # unnamed now: first in line again
            self.free_block_ids.move_to_end(block_id, last=False)
        self.idle_cached_block_ids.clear()

    def _next_free_block(self) -> int:
        """Take the block to write next off the free list: a freed unnamed block, else a never-written
        one while the idle named blocks are within their bound, else the least recently freed named one."""
        block_id = next(iter(self.free_block_ids))
        never_written = block_id >= self.num_touched_blocks
        if never_written and len(self.idle_cached_block_ids) > self.max_idle_cached_blocks:
            block_id = next(iter(self.idle_cached_block_ids))
        del self.free_block_ids[block_id]
        self.idle_cached_block_ids.pop(block_id, None)
        return block_id

    def _forget(self, block_id: int) -> None:
        name = self.hash_of_block[block_id]
        if name is not None:
            self.hash_of_block[block_id] = None
            if self.block_of_hash.get(name) == block_id:
                del self.block_of_hash[name]
