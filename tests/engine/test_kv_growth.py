"""The KV pool holds memory as it is used, not up front; residency charges what an engine holds and
evicts idle models when that grows past the budget; a library engine's pool fits the budget."""

from __future__ import annotations

from dataclasses import replace
from pathlib import Path

import gguf
import torch

from llmasos.config import EngineConfig
from llmasos.engine.block_manager import BlockManager
from llmasos.engine.engine import LLMEngine
from llmasos.engine.model_runner import allocate_kv_pool
from llmasos.engine.sampling import SamplingParams
from llmasos.engine.swap_space import SwapSpace
from llmasos.kernel.boot import library_loader
from llmasos.kernel.residency import ResidencyManager
from llmasos.library import ModelStore
from tests.engine.test_block_manager import make_seq
from tests.helpers.fake_engine import FakeEngine
from tests.helpers.tiny_model import TinySpec, write_tiny_gguf


def _rss_bytes() -> int:
    for line in Path("/proc/self/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            return int(line.split()[1]) * 1024
    raise AssertionError("no VmRSS in /proc/self/status")


def test_blocks_are_touched_once_and_reused_before_fresh_ones() -> None:
    manager = BlockManager(num_blocks=16, block_size=4, enable_prefix_caching=False)
    first = make_seq("a", 10)
    manager.allocate(first, 10)  # 3 blocks
    assert manager.num_touched_blocks == 3
    manager.free(first)
    second = make_seq("b", 6)
    manager.allocate(second, 6)  # 2 blocks, both taken from the freed ones
    assert manager.num_touched_blocks == 3
    third = make_seq("c", 20)
    manager.allocate(third, 20)  # 5 blocks: the freed one left, then 4 fresh
    assert manager.num_touched_blocks == 7
    assert set(second.block_table + third.block_table) == set(range(7))


def _computed(manager: BlockManager, seq_id: str, first_token: int, num_tokens: int):
    """A sequence whose `num_tokens` prompt tokens (distinct from any other's) are computed and named."""
    seq = make_seq(seq_id, num_tokens)
    seq.token_ids = list(range(first_token, first_token + num_tokens))
    manager.allocate(seq, num_tokens)
    seq.num_computed_tokens = num_tokens
    manager.register_computed_blocks(seq)
    return seq


def test_named_blocks_are_reused_before_fresh_ones_are_touched() -> None:
    """With no allowance for cached blocks, freed blocks that hold a cached prefix are taken (least
    recently freed first) before a block whose pages were never written: the pool stays as resident
    as the most KV held at once."""
    manager = BlockManager(num_blocks=64, block_size=4, enable_prefix_caching=True, max_idle_cached_blocks=0)
    older = _computed(manager, "older", 1000, 8)  # 2 named blocks
    newer = _computed(manager, "newer", 2000, 8)
    manager.free(older)
    manager.free(newer)
    assert manager.num_touched_blocks == 4 and manager.num_cached_blocks == 4
    third = _computed(manager, "third", 3000, 8)  # takes the older prompt's two blocks
    assert manager.num_touched_blocks == 4
    assert set(third.block_table) == {0, 1}
    # The newer prompt's blocks are still cached and found again; the older one's are gone.
    again = make_seq("again", 9)
    again.token_ids = list(range(2000, 2009))
    assert len(manager.match_prefix(again)) == 2
    repeat = make_seq("repeat", 9)
    repeat.token_ids = list(range(1000, 1009))
    assert manager.match_prefix(repeat) == []
    for i in range(20):  # many distinct prompts one after another touch no more than one needs
        manager.free(_computed(manager, f"p{i}", 10_000 * (i + 1), 8))
    assert manager.num_touched_blocks == 4  # `third` holds two, the others take turns with two


def test_cached_blocks_are_kept_up_to_their_allowance_then_the_oldest_is_reused() -> None:
    manager = BlockManager(num_blocks=64, block_size=4, enable_prefix_caching=True, max_idle_cached_blocks=4)
    for i in range(8):  # 2 named blocks each, freed: fresh blocks until 4 are kept, then reuse
        manager.free(_computed(manager, f"p{i}", 1000 * (i + 1), 8))
    # At most what one prompt holds beyond the allowance: a block is reused once 4 are kept.
    assert 4 <= manager.num_touched_blocks <= 2 + 4
    assert manager.num_cached_blocks >= 4
    newest, oldest = make_seq("newest", 9), make_seq("oldest", 9)
    newest.token_ids, oldest.token_ids = list(range(8000, 8009)), list(range(1000, 1009))
    assert len(manager.match_prefix(newest)) == 2
    assert manager.match_prefix(oldest) == []


def test_blocks_named_and_freed_become_first_in_line_when_the_cache_is_reset() -> None:
    manager = BlockManager(num_blocks=16, block_size=4, enable_prefix_caching=True)
    manager.free(_computed(manager, "a", 100, 8))
    manager.reset_prefix_cache()
    assert manager.num_cached_blocks == 0
    _computed(manager, "b", 200, 8)
    assert manager.num_touched_blocks == 2 and manager.num_free_blocks == 14


def test_an_engine_is_charged_the_kv_it_wrote_and_its_pool_is_not_resident_up_front(tiny_loaded) -> None:
    before = _rss_bytes()
    # (max_num_seqs: the tiny context would cap the pool far lower)
    engine = LLMEngine(tiny_loaded, EngineConfig(block_size=4, kv_cache_bytes=256 * 2**20, max_num_seqs=4096))
    assert engine.runner.kv_cache_bytes > 200 * 2**20  # a large pool ...
    assert _rss_bytes() - before < 64 * 2**20  # ... that holds no memory until it is written
    weights = engine.memory_bytes
    assert weights == engine.runner.weight_bytes
    prompt = list(range(1, 22))
    engine.generate([prompt], SamplingParams(max_tokens=3, temperature=0, ignore_eos=True))
    touched = engine.block_manager.num_touched_blocks
    assert touched == -(-(len(prompt) + 3) // 4)  # the prompt and its new tokens, 4 a block
    assert engine.memory_bytes == weights + touched * engine.runner.kv_block_bytes
    engine.generate([prompt], SamplingParams(max_tokens=3, temperature=0, ignore_eos=True))
    assert engine.block_manager.num_touched_blocks <= 2 * touched  # freed blocks are reused


def test_residency_charges_what_engines_hold_and_evicts_idle_ones_when_kv_grows_past_the_budget() -> None:
    engines: dict[str, FakeEngine] = {}

    def load(name: str) -> tuple[FakeEngine, int]:
        engines[name] = FakeEngine()
        return engines[name], engines[name].memory_bytes

    residency = ResidencyManager(2500, load, lambda name: 1000)
    residency.acquire("a")
    residency.acquire("b")  # both fit: 2,000 of 2,500
    residency.release("b")
    assert residency.used_bytes == 2000
    engines["a"].memory_bytes = 1400  # a's KV grows while it serves
    assert residency.models["a"].memory_bytes == 1400 and residency.used_bytes == 2400
    assert residency.unload_expired() == []  # within the budget: nothing to do
    engines["a"].memory_bytes = 1800  # past it: the idle model goes, the pinned one stays
    assert residency.unload_expired() == ["b"]
    assert set(residency.models) == {"a"} and residency.used_bytes == 1800


def test_a_library_engines_kv_pool_is_what_the_budget_leaves_beside_its_weights(tmp_path) -> None:
    path, _ = write_tiny_gguf(tmp_path / "tiny.gguf", TinySpec(qtype=gguf.GGMLQuantizationType.F32))
    store = ModelStore()
    store.pull(str(path), name="tiny", progress=False)
    config = EngineConfig(device="cpu", weight_format="float32", kv_cache_bytes=64 * 2**20)
    _, estimate = library_loader(config, store)
    budget = estimate("tiny") + 2**20
    load, _ = library_loader(config, store, budget_bytes=budget)
    engine, _ = load("tiny")
    assert engine.runner.kv_cache_bytes <= 2**20
    roomy, _ = library_loader(config, store, budget_bytes=2**40)
    assert roomy("tiny")[0].runner.kv_cache_bytes > 2**20  # the configured pool where the budget allows it


def test_finished_answers_leave_the_prefix_cache_at_its_bound_not_the_whole_pool() -> None:
    """Each request of a server under load ends with blocks of its own answer named for reuse. They
    once stayed cached until the pool was full, every new request taking never-written pages (the
    server's RSS grew by the whole pool and stayed). Past the bound, the least recently freed named
    block is overwritten first; the prompts the requests share stay cached."""
    manager = BlockManager(num_blocks=1000, block_size=4, max_idle_cached_blocks=10)
    shared_prompt = [7] * 8  # two whole blocks every request starts with
    for request in range(300):
        seq = make_seq(f"r{request}", 0)
        seq.token_ids = shared_prompt + [1000 + request] * 12  # and an answer of its own: 3 blocks
        manager.take_prefix(seq, manager.match_prefix(seq))
        manager.allocate(seq, seq.num_tokens - seq.num_computed_tokens)
        seq.num_computed_tokens = seq.num_tokens
        manager.register_computed_blocks(seq)
        manager.free(seq)
        assert len(manager.idle_cached_block_ids) <= 10 + 5
    assert manager.num_touched_blocks <= 5 + 10 + 1  # one request's blocks, the bound, and a spare
    last = make_seq("again", 0)
    last.token_ids = shared_prompt + [1299] * 12 + [1]
    assert len(manager.match_prefix(last)) == 5  # the shared prompt and the latest answer are cached
    assert manager.num_prefix_hits == 299 * 8  # every request after the first found the shared prompt


def test_without_a_bound_the_cache_takes_the_pool() -> None:
    manager = BlockManager(num_blocks=1000, block_size=4)
    for request in range(100):
        seq = make_seq(f"r{request}", 0)
        seq.token_ids = [1000 + request] * 12
        manager.allocate(seq, 12)
        seq.num_computed_tokens = 12
        manager.register_computed_blocks(seq)
        manager.free(seq)
    assert manager.num_touched_blocks == 300


def test_an_engine_serving_many_answers_keeps_its_pool_resident_memory_at_the_bound(tiny_loaded) -> None:
    config = EngineConfig(block_size=4, kv_cache_bytes=64 * 2**20, max_num_seqs=4096)
    engine = LLMEngine(tiny_loaded, config)
    block = engine.runner.kv_block_bytes
    bounded = LLMEngine(tiny_loaded, replace(config, prefix_cache_bytes=8 * block))
    params = SamplingParams(max_tokens=8, temperature=0, ignore_eos=True)
    for request in range(12):  # distinct prompts of 3 blocks, answers of 2: 5 blocks each
        prompts = [[1 + (request * 4 + i) % 200] * 12 for i in range(4)]
        engine.generate(prompts, params)
        bounded.generate(prompts, params)
    # The default bound is more than the tiny model's whole pool: every answer's named blocks kept.
    assert engine.block_manager.num_touched_blocks >= 12 * 4 * 4
    # Bounded: 4 sequences at once (20 blocks), the 8 idle ones and what one batch frees at once.
    assert bounded.block_manager.num_touched_blocks <= 20 + 8 + 20
    assert bounded.memory_bytes < engine.memory_bytes


def test_swap_space_grows_by_what_a_swap_lacks_and_copies_back_exactly() -> None:
    """A swap of more blocks than a chunk holds gets one chunk of exactly those blocks (not whole
    chunks of `chunk_blocks`), the blocks come back as they went, and freed blocks are reused."""
    block_shape = (2, 2, 4, 1, 8)  # (layers, K/V, block_size, kv_heads, head_dim)
    pool = torch.randn(2, 2, 12, 4, 1, 8)  # a pool of 12 blocks, viewed by block
    space = SwapSpace(block_shape, torch.float32, pin=False, chunk_blocks=4)
    handle = space.swap_out(pool, list(range(9)))
    assert space.num_blocks == 9
    restored = torch.zeros_like(pool)
    space.swap_in(handle, restored, list(range(9)))
    assert torch.equal(restored[:, :, :9], pool[:, :, :9])
    assert space.num_free_blocks == 9
    space.swap_out(pool, [10, 11])  # fits in the freed blocks: no growth
    assert space.num_blocks == 9


def test_swap_space_gives_back_free_chunks_beyond_its_reserve_and_keeps_working() -> None:
    block_shape = (2, 2, 4, 1, 8)
    pool = torch.randn(2, 2, 12, 4, 1, 8)
    block_bytes = 2 * 2 * 4 * 8 * 4
    space = SwapSpace(block_shape, torch.float32, pin=False, chunk_blocks=2, reserve_bytes=2 * block_bytes)
    assert space.num_blocks == 2  # the reserve: one chunk, touched up front
    held = space.swap_out(pool, [0, 1, 2])  # grows by a chunk of 2
    done = space.swap_out(pool, [3, 4, 5, 6, 7])  # and by one of 4
    assert space.num_blocks == 8
    space.release(done)
    # Nothing the held handle uses goes, nor the reserve; the chunk of 4 is wholly free.
    assert space.shrink() == 4 * block_bytes and space.num_blocks == 4
    restored = torch.zeros_like(pool)
    space.swap_in(held, restored, [0, 1, 2])
    assert torch.equal(restored[:, :, :3], pool[:, :, :3])
    assert space.shrink() == 2 * block_bytes and space.num_blocks == 2  # down to the reserve
    again = space.swap_out(pool, [8, 9, 10])  # grows again as needed, copies exactly
    space.swap_in(again, restored, [8, 9, 10])
    assert torch.equal(restored[:, :, 8:11], pool[:, :, 8:11])


def test_an_engine_with_nothing_left_to_run_gives_its_swap_chunks_back(tiny_loaded) -> None:
    engine = LLMEngine(tiny_loaded, EngineConfig(block_size=4, kv_cache_bytes=4 * 1024 * 1024))
    params = SamplingParams(max_tokens=6, temperature=0, ignore_eos=True)
    engine.add("a", [5, 6, 7, 8, 9, 10, 11], params)
    engine.add("b", [12, 13, 14], params)
    engine.step()
    engine.suspend("a", "swap")
    engine.step()
    assert engine.runner.swap_space.num_blocks > 0  # held by "a", suspended
    engine.resume("a")
    while engine.has_unfinished_requests:
        engine.step()
        assert engine.runner.swap_space.num_blocks > 0 or not engine.requests
    assert engine.runner.swap_space.num_blocks == 0 and not engine.requests
    engine.add("c", [5, 6, 7], params)
    engine.step()
    engine.suspend("c", "swap")
    assert engine.runner.swap_space.num_blocks > 0
    engine.abort("c")  # the last request: an abort gives back too
    assert engine.runner.swap_space.num_blocks == 0


def test_kv_pool_pages_only_read_stay_off_resident_memory() -> None:
    """A read of a block never written maps the zero page: with Python's default anonymous mmap
    (MAP_SHARED) every page read became resident shared memory, 64 MB here."""

    def rss_kb() -> int:
        with open("/proc/self/status") as status:
            return next(int(line.split()[1]) for line in status if line.startswith("VmRSS:"))

    before = rss_kb()
    pool = allocate_kv_pool((16, 1 << 20), torch.float32, torch.device("cpu"))
    assert pool.sum().item() == 0
    assert rss_kb() - before < 8 << 10
    pool[3].fill_(1.0)  # written pages are ordinary memory
    assert pool[3].sum().item() == 1 << 20 and pool[2].sum().item() == 0
