"""Placement as a pure policy: least queued first, prefix affinity within a slack, round robin baseline."""

from __future__ import annotations

from llmasos.cluster.placement import NodeLoad, PrefixIndex, choose_node, round_robin


def test_least_queued_node_wins_without_affinity() -> None:
    loads = [
        NodeLoad("a", queued=5, slots=8),
        NodeLoad("b", queued=1, slots=8),
        NodeLoad("c", queued=3, slots=8),
    ]
    assert choose_node(loads) == "b"


def test_a_node_holding_the_prefix_wins_unless_it_is_much_busier() -> None:
    near = [NodeLoad("a", queued=3, slots=8, cached_blocks=4), NodeLoad("b", queued=2, slots=8)]
    assert choose_node(near) == "a"  # one more queued than b: within the slack of 2
    far = [NodeLoad("a", queued=9, slots=8, cached_blocks=4), NodeLoad("b", queued=2, slots=8)]
    assert choose_node(far) == "b"
    assert choose_node(far, slack=10) == "a"


def test_the_longest_cached_prefix_wins_among_equals() -> None:
    loads = [NodeLoad("a", 2, 8, cached_blocks=1), NodeLoad("b", 2, 8, cached_blocks=3), NodeLoad("c", 2, 8)]
    assert choose_node(loads) == "b"


def test_prefix_index_counts_leading_blocks_per_namespace_and_forgets_nodes() -> None:
    index = PrefixIndex(block_size=4)
    system = list(range(100, 112))  # three blocks
    index.record("a", index.block_hashes("app1", [*system, 1, 2, 3, 4]))
    asked = index.block_hashes("app1", [*system, 9, 9, 9, 9])
    assert index.cached_blocks("a", asked) == 3
    assert index.cached_blocks("b", asked) == 0
    assert index.cached_blocks("a", index.block_hashes("app2", [*system, 1, 2, 3, 4])) == 0  # other app
    index.forget("a")
    assert index.cached_blocks("a", asked) == 0


def test_prefix_index_is_bounded() -> None:
    index = PrefixIndex(block_size=1, capacity=3)
    index.record("a", index.block_hashes("n", [1, 2, 3, 4, 5]))
    assert index.cached_blocks("a", index.block_hashes("n", [1])) == 0  # the oldest were forgotten


def test_round_robin_cycles_in_name_order() -> None:
    loads = [NodeLoad("b", 0, 8), NodeLoad("a", 9, 8)]
    assert [round_robin(loads, i) for i in range(3)] == ["a", "b", "a"]
