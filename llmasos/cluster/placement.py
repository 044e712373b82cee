"""Where a new request runs: a pure policy over the nodes that can run it (no Ray here).

The candidates already have the capability and the model resident (the registry's healthy engines).
Among them the least queued win, within a slack: a node that holds the request's prefix (same app,
same system prompt or conversation) in its prefix cache is preferred as long as it is not more than
`slack` requests busier than the least queued one, since re-prefilling a long prefix elsewhere costs
more than waiting one step behind a few others. Ties go to the least queued, then by name.

`PrefixIndex` remembers, per node, the hashes of the prompt blocks it has been given (bounded, the
oldest forgotten first), as a stand-in for the node's own prefix cache that costs no Ray call.
"""

from __future__ import annotations

from collections import OrderedDict
from collections.abc import Sequence
from dataclasses import dataclass


@dataclass(frozen=True)
class NodeLoad:
    """One candidate node for a request."""

    name: str
    queued: int  # requests it holds now
    slots: int  # requests one of its steps runs (its engine's max_num_seqs)
    cached_blocks: int = 0  # leading prompt blocks of this request it has seen (prefix affinity)


def choose_node(candidates: Sequence[NodeLoad], slack: int | None = None) -> str:
    """The node to place on (see the module docstring). `candidates` must not be empty."""
    if not candidates:
        raise ValueError("no candidate node")
    least = min(c.queued for c in candidates)
    allowed = slack if slack is not None else max(2, min(c.slots for c in candidates) // 4)
    eligible = [c for c in candidates if c.queued <= least + allowed]
    best = min(eligible, key=lambda c: (-c.cached_blocks, c.queued, c.name))
    return best.name


def round_robin(candidates: Sequence[NodeLoad], counter: int) -> str:
    """The `counter`-th node in name order: the baseline affinity is measured against."""
    names = sorted(c.name for c in candidates)
    return names[counter % len(names)]


class PrefixIndex:
    """Per node, the block-prefix hashes of prompts placed there, within one cache namespace."""

    def __init__(self, block_size: int, capacity: int = 50_000) -> None:
        self.block_size = block_size
        self.capacity = capacity
        self._seen: dict[str, OrderedDict[int, None]] = {}

    def block_hashes(self, namespace: str, token_ids: Sequence[int]) -> list[int]:
        """One hash per full block, each covering every token before it (a chain, as the cache's)."""
        hashes, running = [], hash(namespace)
        size = self.block_size
        for start in range(0, len(token_ids) - size + 1, size):
            running = hash((running, tuple(token_ids[start : start + size])))
            hashes.append(running)
        return hashes

    def cached_blocks(self, node: str, hashes: Sequence[int]) -> int:
        """How many leading blocks of `hashes` were placed on `node`."""
        seen = self._seen.get(node)
        if not seen:
            return 0
        count = 0
        for h in hashes:
            if h not in seen:
                break
            count += 1
        return count

    def record(self, node: str, hashes: Sequence[int]) -> None:
        seen = self._seen.setdefault(node, OrderedDict())
        for h in hashes:
            seen[h] = None
            seen.move_to_end(h)
        while len(seen) > self.capacity:
            seen.popitem(last=False)

    def forget(self, node: str) -> None:
        self._seen.pop(node, None)
