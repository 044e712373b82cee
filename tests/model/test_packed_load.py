"""A GGUF model packed straight into the int4 layout (no float32 copy) is the model the float path
makes: the same packed tensors where the file is 4-bit, the same greedy text, through the real loader."""

from __future__ import annotations

from pathlib import Path

import gguf
import pytest
import torch

from llmasos.config import EngineConfig
from llmasos.engine.engine import LLMEngine
from llmasos.engine.sampling import SamplingParams
from llmasos.model import loader, packed_cache
from llmasos.model.block_layout import BLOCK_ROWS, from_row_blocks
from llmasos.model.group_linear import Int8GroupLinear
from llmasos.model.loader import load_model
from llmasos.model.q8_embedding import Int4Embedding, Q8Embedding
from tests.helpers.memory_maps import mapping_of
from tests.helpers.tiny_model import MIXED, TinySpec, write_tiny_gguf

Q = gguf.GGMLQuantizationType
GREEDY = SamplingParams(max_tokens=12, temperature=0, ignore_eos=True)
PROMPTS = [[1, 5, 9, 14, 3], [7, 7, 2, 30, 31, 12, 4]]
PROJECTIONS = ("qkv_proj", "o_proj", "gate_up_proj", "down_proj")


def _engines(path: Path) -> tuple[LLMEngine, LLMEngine]:
    """(packed at load, converted from float32 after load), both int4."""
    config = EngineConfig(kv_cache_bytes=4 * 1024 * 1024, swap_reserve_bytes=0)
    packed = load_model(path, packed_format="int4")
    floats = load_model(path)
    return LLMEngine(packed, config, owns_load=True), LLMEngine(floats, config, owns_load=True)


@pytest.mark.parametrize(
    "spec",
    [
        TinySpec(qtype=Q.Q4_1),
        TinySpec(qtype=Q.Q4_0, architecture="qwen2", tie_embeddings=False),
        TinySpec(qtype=Q.F32, architecture="qwen2"),
    ],
    ids=["llama-Q4_1", "qwen2-Q4_0-untied", "qwen2-F32"],
)
def test_packed_load_is_the_float_paths_model(tmp_path: Path, spec: TinySpec) -> None:
    path, _ = write_tiny_gguf(tmp_path / "m.gguf", spec)
    packed, converted = _engines(path)
    reference = load_model(path).model  # the file's weights dequantized to float32
    assert packed.runner.model.packed_format == "int4"
    assert converted.runner.model.packed_format is None
    layers = zip(packed.runner.model.layers, converted.runner.model.layers, reference.layers, strict=True)
    for a, b, ref in layers:
        for name in PROJECTIONS:
            pa, pb, want = getattr(a, name), getattr(b, name), getattr(ref, name).weight
            wa, wb = _layer_weights(pa), _layer_weights(pb)
            scale = want.abs().max()
            if spec.qtype == Q.Q4_0:
                # the file's own groups, where re-quantizing by min and max moved Q4_0's (whose q = 15 is
                # often unused): closer to the file than the float path's
                assert (wa - want).abs().max() <= 2e-3 * scale < (wb - want).abs().max()
            else:  # the same q; d and m up to one float rounding, which may move an integer k a step
                torch.testing.assert_close(wa, wb, rtol=0, atol=2e-3 * scale)
    assert torch.equal(packed.runner.model.logits_proj.qweight, converted.runner.model.logits_proj.qweight)
    if spec.qtype != Q.Q4_0:
        assert packed.generate(PROMPTS, GREEDY) == converted.generate(PROMPTS, GREEDY)


def _layer_weights(layer: torch.nn.Module) -> torch.Tensor:
    """The weights an int4 layer computes with, as float32 (out, in)."""
    if layer.kernels is None:  # torch's int4 form keeps them
        return layer.dense
    return _weights(*layer.integer_weights(), layer.row_scale)


def _weights(q: torch.Tensor, k: torch.Tensor, c: torch.Tensor, row_scale: torch.Tensor) -> torch.Tensor:
    groups = q.view(q.shape[0], -1, 32).float() * k[..., None].float() + c[..., None].float()
    return groups.view_as(q) * row_scale[:, None]


@pytest.mark.parametrize("spec", [TinySpec(qtype=Q.Q8_0), MIXED], ids=["llama-Q8_0", "qwen2-mixed"])
def test_projections_of_more_than_4_bits_are_computed_as_the_file_stores_them(
    tmp_path: Path, spec: TinySpec
) -> None:
    path, _ = write_tiny_gguf(tmp_path / "m.gguf", spec)
    packed = load_model(path, packed_format="int4")
    reference = load_model(path).model  # the file's weights dequantized to float32
    held_in_8_bits = {"qkv_proj", "down_proj"} if spec.qtype_overrides else set(PROJECTIONS)
    for layer, ref in zip(packed.model.layers, reference.layers, strict=True):
        for name in PROJECTIONS:
            proj, want = getattr(layer, name), getattr(ref, name).weight
            assert isinstance(proj, Int8GroupLinear) == (name in held_in_8_bits), name
            if name in held_in_8_bits:  # every part exact, 4-bit ones among them
                torch.testing.assert_close(_group_weights(proj), want, rtol=0, atol=1e-6 * want.abs().max())
    if spec.qtype == Q.Q8_0:
        assert isinstance(packed.model.embed_tokens, Q8Embedding)
    config = EngineConfig(kv_cache_bytes=4 * 1024 * 1024, swap_reserve_bytes=0)
    floats = LLMEngine(load_model(path), EngineConfig(kv_cache_bytes=4 << 20, weight_format="float32"))
    assert LLMEngine(packed, config).generate(PROMPTS, GREEDY) == floats.generate(PROMPTS, GREEDY)


def test_a_mixed_file_runs_the_cpp_step_and_reads_back_from_the_packed_cache(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    path, _ = write_tiny_gguf(tmp_path / "m.gguf", MIXED)
    first = load_model(path, packed_format="int4")
    if first.model.native_layers is None:
        pytest.skip("the C++ kernels do not build here")
    config = EngineConfig(kv_cache_bytes=4 * 1024 * 1024)
    want = LLMEngine(first, config).generate(PROMPTS, GREEDY)
    monkeypatch.setattr(loader, "open_gguf", _not_opened)  # the cache alone serves the next loads
    second = load_model(path, packed_format="int4")
    assert isinstance(second.model.layers[0].down_proj, Int8GroupLinear)
    assert second.model.native_layers is not None
    assert LLMEngine(second, config).generate(PROMPTS, GREEDY) == want
    torch_layers = load_model(path, packed_format="int4")
    torch_layers.model.native_layers = None  # each projection's kernel, the step in torch ops
    assert LLMEngine(torch_layers, config).generate(PROMPTS, GREEDY) == want


def _group_weights(layer: Int8GroupLinear) -> torch.Tensor:
    """The weights an 8-bit grouped layer computes with, as float32 (out, in)."""
    if layer.kernels is None:
        return layer.dense
    blocks, pairs, _ = layer.q.shape
    q = layer.q.view(blocks, pairs, BLOCK_ROWS, 2).permute(0, 2, 1, 3).reshape(blocks * BLOCK_ROWS, -1)
    d, m = from_row_blocks(layer.d), from_row_blocks(layer.m)
    return (q.view(q.shape[0], -1, 16).float() * d[..., None] + m[..., None]).view(q.shape)


def test_packed_model_refuses_another_format(tmp_path: Path) -> None:
    path, _ = write_tiny_gguf(tmp_path / "m.gguf", TinySpec(qtype=Q.Q4_1))
    model = load_model(path, packed_format="int4").model
    assert model.quantize("int4") is model
    with pytest.raises(ValueError, match="load it again"):
        model.quantize("int8")


def test_engine_from_path_packs_at_load(tmp_path: Path) -> None:
    path, _ = write_tiny_gguf(tmp_path / "m.gguf", TinySpec(qtype=Q.Q4_1))
    engine = LLMEngine.from_path(str(path), EngineConfig(kv_cache_bytes=4 * 1024 * 1024))
    assert engine.runner.model.packed_format == "int4"
    dense = LLMEngine.from_path(
        str(path), EngineConfig(kv_cache_bytes=4 * 1024 * 1024, weight_format="float32")
    )
    assert dense.runner.model.packed_format is None


@pytest.mark.parametrize("qtype", [Q.Q4_0, Q.Q4_1], ids=lambda q: q.name)
def test_a_4bit_embedding_table_stays_in_its_integers_and_looks_up_exactly(tmp_path: Path, qtype: Q) -> None:
    path, _ = write_tiny_gguf(tmp_path / "m.gguf", TinySpec(qtype=qtype))
    packed = load_model(path, packed_format="int4").model
    table = load_model(path).model.embed_tokens.weight  # gguf-py's dequantization
    assert isinstance(packed.embed_tokens, Int4Embedding)
    ids = torch.arange(table.shape[0])
    torch.testing.assert_close(packed.embed_tokens(ids), table, rtol=0, atol=1e-6)
    assert packed.held_bytes() < load_model(path).model.held_bytes() / 3


def test_a_second_load_reads_the_packed_cache_and_is_the_same_model(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    path, _ = write_tiny_gguf(tmp_path / "m.gguf", TinySpec(qtype=Q.Q4_1, architecture="qwen2"))
    first = load_model(path, packed_format="int4")
    if first.model.native_layers is None:
        pytest.skip("the cache holds the C++ kernels' layout; they do not build here")
    cache = packed_cache.cache_path(path)
    assert cache.is_file() and cache.stat().st_mode & 0o777 == 0o600
    monkeypatch.setattr(loader, "open_gguf", _not_opened)  # the cache alone serves the second load
    second = load_model(path, packed_format="int4")
    monkeypatch.undo()
    assert second.config == first.config
    # The tables read a row at a time are views of the cache file (only the rows used become resident).
    embed = second.model.embed_tokens
    sparse = [*embed.parameters(), *(v for v in vars(embed).values() if isinstance(v, torch.Tensor))]
    for tensor in [*sparse, second.model.rope_cos, second.model.rope_sin]:
        assert mapping_of(tensor.data_ptr()) == str(cache)
    assert mapping_of(second.model.norm.weight.data_ptr()) != str(cache)  # the rest is read
    text = "Hello, world! 123"
    assert second.tokenizer.encode(text) == first.tokenizer.encode(text)
    assert second.tokenizer.stop_token_ids == first.tokenizer.stop_token_ids
    config = EngineConfig(kv_cache_bytes=4 * 1024 * 1024)
    want = LLMEngine(first, config).generate(PROMPTS, GREEDY)
    assert LLMEngine(second, config).generate(PROMPTS, GREEDY) == want


def test_a_stale_or_torn_cache_is_rebuilt(tmp_path: Path) -> None:
    path, _ = write_tiny_gguf(tmp_path / "m.gguf", TinySpec(qtype=Q.Q4_1))
    first = load_model(path, packed_format="int4")
    if first.model.native_layers is None:
        pytest.skip("the C++ kernels do not build here")
    cache = packed_cache.cache_path(path)
    cache.write_bytes(cache.read_bytes()[:1000])  # torn
    again = load_model(path, packed_format="int4")
    assert LLMEngine(again, EngineConfig(kv_cache_bytes=4 * 1024 * 1024)).generate(
        PROMPTS, GREEDY
    ) == LLMEngine(first, EngineConfig(kv_cache_bytes=4 * 1024 * 1024)).generate(PROMPTS, GREEDY)
    assert cache.stat().st_size > 1000  # replaced
    write_tiny_gguf(path, TinySpec(qtype=Q.Q4_1, seed=5))  # another model under the same name
    rebuilt = load_model(path, packed_format="int4")
    assert not torch.equal(rebuilt.model.norm.weight, first.model.norm.weight)


def _not_opened(path: Path) -> None:
    raise AssertionError(f"{path} was parsed although its packed cache is valid")
