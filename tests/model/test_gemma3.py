"""Gemma 3 against transformers' own Gemma3ForCausalLM, on a tiny random model written as llama.cpp
writes Gemma 3 GGUFs: sliding-window layers (a window of 4, so a 14-token prompt is cut by it) with
their own RoPE base beside a global layer, QK-norm, sandwich norms, GeGLU, embedding scaling.

The real Gemma 3 270M is checked in `test_gemma3_real.py`."""

from __future__ import annotations

from pathlib import Path

import gguf
import pytest
import torch

from llmasos.config import EngineConfig
from llmasos.engine.engine import LLMEngine
from llmasos.engine.sampling import SamplingParams
from llmasos.model import loader
from llmasos.model.config import RopeScaling
from llmasos.model.gemma3 import GEMMA3_LAYER_NORMS, Gemma3Model
from llmasos.model.group_linear import Int8GroupLinear
from llmasos.model.layers import rope_cos_sin, rope_inv_freq, rope_rows
from llmasos.model.loader import load_model
from llmasos.model.native import cpu_kernels
from llmasos.model.packed_build import q8_0_head
from llmasos.model.q8_embedding import HeadRowsEmbedding, Q8Embedding, untouched_zeros
from tests.helpers.reference import full_logits, hf_greedy, hf_logits
from tests.helpers.tiny_gemma3 import write_tiny_gemma3_gguf

PROMPT = [5, 17, 42, 8, 99, 23, 61, 7, 150, 33, 12, 77, 250, 4]  # 14 tokens, > 3 windows of 4


@pytest.fixture(scope="module")
def tiny_gemma3(tmp_path_factory: pytest.TempPathFactory):
    """(our loaded model, transformers' model) for the same tiny Gemma 3 with a 4-token window."""
    path, reference = write_tiny_gemma3_gguf(tmp_path_factory.mktemp("gemma3") / "g.gguf", sliding_window=4)
    return load_model(path), reference, path


def test_config_read_from_gguf(tiny_gemma3) -> None:
    ours, _, _ = tiny_gemma3
    c = ours.config
    assert c.architecture == "gemma3" and c.sliding_window == 4 and c.rope_local_theta == 10_000.0
    # Every 6th layer is global: layer 5 of 7.
    assert c.sliding_layers == (True, True, True, True, True, False, True)
    assert [layer.sliding_window for layer in ours.model.layers] == [4, 4, 4, 4, 4, None, 4]


def test_logits_match_transformers(tiny_gemma3) -> None:
    ours, reference, _ = tiny_gemma3
    torch.testing.assert_close(full_logits(ours, PROMPT), hf_logits(reference, PROMPT), atol=1e-4, rtol=0)


def test_window_changes_the_answer(tiny_gemma3, tmp_path: Path) -> None:
    """The same weights with a window wider than the prompt give other logits past the 4th token (and
    the same before it): the window is really applied, and only where it cuts."""
    ours, _, _ = tiny_gemma3
    wide, wide_reference = write_tiny_gemma3_gguf(tmp_path / "wide.gguf", sliding_window=64)
    wide_logits = full_logits(load_model(wide), PROMPT)
    torch.testing.assert_close(wide_logits, hf_logits(wide_reference, PROMPT), atol=1e-4, rtol=0)
    narrow_logits = full_logits(ours, PROMPT)
    torch.testing.assert_close(narrow_logits[:4], wide_logits[:4], atol=1e-4, rtol=0)
    assert (narrow_logits[4:] - wide_logits[4:]).abs().max() > 1e-2


def test_engine_greedy_matches_transformers(tiny_gemma3) -> None:
    """Through the engine (paged KV, prefill then decode steps, both windowed): same greedy tokens."""
    _, reference, path = tiny_gemma3
    engine = LLMEngine.from_path(str(path), EngineConfig(dtype="float32", weight_format="float32"))
    prompts = [PROMPT, PROMPT[:6], PROMPT[3:]]
    ours = engine.generate(prompts, SamplingParams(max_tokens=12, temperature=0, ignore_eos=True))
    for ids, (_, tokens) in zip(prompts, ours, strict=True):
        assert tokens == hf_greedy(reference, ids, 12, eos_token_id=[])


def _reference_attention(q: torch.Tensor, k: torch.Tensor, v: torch.Tensor, q_pos: int, window: int):
    """One query (heads, D) over keys 0..q_pos (T, kv_heads, D), seeing only the last `window`."""
    group = q.shape[0] // k.shape[1]
    keys, values = k.repeat_interleave(group, 1), v.repeat_interleave(group, 1)  # (T, heads, D)
    seen = torch.arange(k.shape[0])
    seen = (seen <= q_pos) & (seen > q_pos - window)
    scores = torch.einsum("hd,thd->ht", q, keys).masked_fill(~seen, float("-inf"))
    return torch.einsum("ht,thd->hd", scores.softmax(-1), values).flatten()


@pytest.mark.parametrize("step", ["decode", "chunk"])
def test_paged_attention_hides_keys_outside_the_window(step: str) -> None:
    """Two sequences of 10 and 7 tokens with a window of 3, each query against a hand-masked softmax."""
    from llmasos.model.attention import AttentionMetadata, paged_attention

    torch.manual_seed(0)
    heads, kv_heads, dim, window, lens = 4, 2, 16, 3, [10, 7]
    keys = [torch.randn(n, kv_heads, dim) for n in lens]
    values = [torch.randn(n, kv_heads, dim) for n in lens]
    k_cache, v_cache = torch.zeros(32, kv_heads, dim), torch.zeros(32, kv_heads, dim)
    kv_slots = torch.tensor([list(range(10)), [*range(16, 23), 0, 0, 0]])
    ctx = torch.tensor(lens)
    # Earlier tokens already cached; this step computes the last token (decode) or the last 4 (chunk).
    new = 1 if step == "decode" else 4
    for s, n in enumerate(lens):
        k_cache[kv_slots[s, : n - new]] = keys[s][: n - new]
        v_cache[kv_slots[s, : n - new]] = values[s][: n - new]
    q = torch.randn(2 * new, heads, dim)
    k = torch.cat([keys[s][-new:] for s in range(2)])
    v = torch.cat([values[s][-new:] for s in range(2)])
    slot_mapping = torch.cat([kv_slots[s, lens[s] - new : lens[s]] for s in range(2)])
    if step == "decode":
        bias = torch.zeros(2, 1, 1, 10)
        bias[1, ..., 7:] = float("-inf")  # the shorter sequence's padding
        meta = AttentionMetadata(
            slot_mapping, kv_slots, None, None, None, decode=True, decode_bias=bias, context_lens=ctx
        )
    else:
        q_pos = torch.stack([torch.arange(n - new, n) for n in lens])  # (B, T_q)
        mask = (torch.arange(10)[None, None, :] <= q_pos[:, :, None]) & (
            torch.arange(10)[None, None, :] < ctx[:, None, None]
        )
        query_index = torch.arange(2 * new).view(2, new)
        meta = AttentionMetadata(
            slot_mapping, kv_slots, query_index, torch.ones(2, new, dtype=torch.bool), mask[:, None]
        )
    out = paged_attention(q, k, v, k_cache, v_cache, meta, sliding_window=window)
    for s, n in enumerate(lens):
        for j in range(new):
            row = s * new + j
            expected = _reference_attention(q[row], keys[s], values[s], n - new + j, window)
            torch.testing.assert_close(out[row], expected, atol=1e-5, rtol=0)


def test_the_int4_load_keeps_a_q8_0_files_blocks_and_reads_back_from_its_cache(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """What `serve` runs (the int4 load, packed_build.py) on a Gemma 3 file of Q8_0 blocks: every projection
    holds the file's values exactly (8-bit groups, not re-quantized to 4 bits), the extra norms are the
    file's, and greedy tokens are the float32 model's; a second load reads the packed cache alone."""
    path, _ = write_tiny_gemma3_gguf(tmp_path / "q8.gguf", qtype=gguf.GGMLQuantizationType.Q8_0)
    floats = load_model(path)  # the file's blocks dequantized to float32
    exact = load_model(path, packed_format="int4", keep_dense=True)  # each layer's weights, as floats
    assert isinstance(exact.model, Gemma3Model) and exact.model.packed_format == "int4"
    assert isinstance(exact.model.embed_tokens, Q8Embedding)
    for layer, want in zip(exact.model.layers, floats.model.layers, strict=True):
        for name in ("qkv_proj", "o_proj", "gate_up_proj", "down_proj"):
            proj, weight = getattr(layer, name), getattr(want, name).weight
            assert isinstance(proj, Int8GroupLinear), name
            torch.testing.assert_close(proj.dense, weight, rtol=0, atol=1e-6 * weight.abs().max())
        for norm in GEMMA3_LAYER_NORMS:
            assert torch.equal(getattr(layer, norm).weight, getattr(want, norm).weight)
    config = EngineConfig(kv_cache_bytes=4 << 20, swap_reserve_bytes=0)
    prompts = [PROMPT, PROMPT[3:]]
    greedy = SamplingParams(max_tokens=12, temperature=0, ignore_eos=True)
    want = LLMEngine(floats, EngineConfig(kv_cache_bytes=4 << 20, weight_format="float32")).generate(
        prompts, greedy
    )
    packed = load_model(path, packed_format="int4")
    assert LLMEngine(packed, config).generate(prompts, greedy) == want
    if packed.packed_cache_written is None:
        pytest.skip("the cache holds the C++ kernels' layout; they do not build here")
    monkeypatch.setattr(loader, "open_gguf", _not_opened)
    cached = load_model(path, packed_format="int4")
    assert cached.read_from_cache and isinstance(cached.model, Gemma3Model)
    assert [layer.sliding_window for layer in cached.model.layers] == [4, 4, 4, 4, 4, None, 4]
    assert LLMEngine(cached, config).generate(prompts, greedy) == want


def _not_opened(path: Path) -> None:
    raise AssertionError(f"{path} was parsed although its packed cache is valid")


@pytest.mark.parametrize("theta", [10_000.0, 1_000_000.0])
def test_rope_rows_are_the_tables_rows_bit_for_bit(theta: float) -> None:
    """Gemma 3 computes each step's RoPE rows from its positions instead of holding tables over the whole
    context: the rows must be the tables' own bits, at any position and in any batch of positions."""
    inv_freq = rope_inv_freq(256, theta, RopeScaling())
    cos, sin = rope_cos_sin(inv_freq, 32_768)
    generator = torch.Generator().manual_seed(0)
    for n in (1, 5, 32, 513):
        positions = torch.randint(0, 32_768, (n,), generator=generator)
        row_cos, row_sin = rope_rows(inv_freq, positions)
        assert torch.equal(row_cos, cos[positions]) and torch.equal(row_sin, sin[positions])


def test_the_model_holds_no_tables_over_its_context(tiny_gemma3, tmp_path: Path) -> None:
    """A context 64x longer adds no bytes to the loaded model (whole tables grew with it: 134 MB of
    Gemma 3 270M's 32,768 positions), loaded from the file or from the packed cache."""
    ours, _, _ = tiny_gemma3
    long, _ = write_tiny_gemma3_gguf(tmp_path / "long.gguf", sliding_window=4, context_length=64 * 256)
    assert ours.config.context_length == 256
    assert load_model(long).model.held_bytes() == ours.model.held_bytes()
    for _ in range(2):  # packs and writes the cache, then reads it
        packed = load_model(long, packed_format="int4")
        assert not any(b.shape[0] == 64 * 256 for b in packed.model.buffers())


def test_a_tied_q8_0_table_is_held_once_as_the_heads_exact_groups(tmp_path: Path) -> None:
    """Gemma 3's tied Q8_0 table (262,144 rows) is kept once, as an 8-bit-group head (the file's q and d
    exactly) whose rows the lookup reads: both give the file's dequantized values, not a re-quantized copy."""
    if cpu_kernels() is None:
        pytest.skip("the 8-bit-group head is the C++ kernels' layout; they do not build here")
    generator = torch.Generator().manual_seed(0)
    table = torch.randn(80, 64, generator=generator).numpy()  # 5 blocks of 16 rows, 2 Q8_0 blocks a row
    writer = gguf.GGUFWriter(str(tmp_path / "t.gguf"), "gemma3")
    packed = gguf.quants.quantize(table, gguf.GGMLQuantizationType.Q8_0)
    writer.add_tensor(
        "token_embd.weight", packed, raw_shape=packed.shape, raw_dtype=gguf.GGMLQuantizationType.Q8_0
    )
    writer.write_header_to_file()
    writer.write_kv_data_to_file()
    writer.write_tensors_to_file()
    writer.close()
    tensor = gguf.GGUFReader(str(tmp_path / "t.gguf")).tensors[0]
    exact = torch.from_numpy(gguf.quants.dequantize(tensor.data, tensor.tensor_type).copy()).view(80, 64)
    head = q8_0_head(tensor, max_quant_tokens=64)
    embedding = HeadRowsEmbedding(head)
    ids = torch.tensor([0, 17, 79, 17, 40])
    assert torch.equal(embedding(ids), exact[ids])
    x = torch.randn(3, 64, generator=generator)
    # The kernel rounds activations as for every int GEMM (quant_linear.py); the weights are exact.
    torch.testing.assert_close(head(x).float(), x @ exact.T, atol=0.05, rtol=0.02)
    assert embedding.bytes_per_token() == 64 + 4 * 4


def test_untouched_zeros_add_no_resident_memory() -> None:
    """The 8-bit-group head's all-zero m lies on pages that reading does not make resident (42 MB for
    Gemma 3 270M's head)."""

    def rss_kb() -> int:
        with open("/proc/self/status") as status:
            return next(int(line.split()[1]) for line in status if line.startswith("VmRSS:"))

    before = rss_kb()
    zeros = untouched_zeros(((64 << 20) // 4,))
    assert zeros.sum().item() == 0
    assert rss_kb() - before < 8 << 10
