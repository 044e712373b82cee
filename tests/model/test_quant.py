"""Weight formats: int8/int4 linear layers stay within their format's error, and quantized engines
keep batching invisible and the real model's answers."""

from __future__ import annotations

from pathlib import Path

import gguf
import pytest
import torch
from torch import nn

from llmasos.config import EngineConfig
from llmasos.engine.engine import LLMEngine
from llmasos.engine.sampling import SamplingParams
from llmasos.model.loader import load_model
from llmasos.model.native import cpu_kernels
from llmasos.model.q8_embedding import Q8Embedding
from llmasos.model.quant_linear import Int4Linear, Int8Linear
from llmasos.model.weight_formats import make_linear, resolve_weight_format
from tests.helpers.engines import random_prompts
from tests.helpers.reference import full_logits
from tests.helpers.tiny_model import TinySpec, write_tiny_gguf

QUANT_FORMATS = ["int8", "int4"]


def _reference(weight: torch.Tensor, x: torch.Tensor) -> torch.Tensor:
    return x.bfloat16().float() @ weight.t()


@pytest.mark.parametrize("cls", [Int8Linear, Int4Linear])
def test_quantized_weights_are_within_half_a_step(cls) -> None:
    torch.manual_seed(0)
    weight = torch.randn(96, 128)
    layer = cls(weight, None, max_quant_tokens=4)
    if cls is Int8Linear:
        step = weight.abs().amax(1, keepdim=True) / 127
    else:
        groups = weight.view(96, 4, 32)
        step = ((groups.amax(-1) - groups.amin(-1)) / 15).repeat_interleave(32, dim=1)
    # Half a quantization step, plus the bfloat16 rounding of scales (and int4 zero points).
    assert ((layer.dense - weight).abs() <= step * 0.5 + 0.02).all()


@pytest.mark.parametrize("cls", [Int8Linear, Int4Linear])
@pytest.mark.parametrize("n", [1, 3, 40])  # the int kernel (n <= 4) and the dense path (n > 4)
def test_quantized_linear_matches_its_dequantized_weights(cls, n: int) -> None:
    torch.manual_seed(1)
    weight = torch.randn(64, 96) * 0.05
    layer = cls(weight, torch.randn(64) * 0.1, max_quant_tokens=4)
    x = torch.randn(n, 96)
    expected = _reference(layer.dense, x) + layer.bias.float()
    got = layer(x).float()
    # Both paths round their output to bfloat16 (8 bits of mantissa).
    assert (got - expected).abs().max() <= 2**-7 * expected.abs().max()
    # ... and to the float weights within the format's error.
    dense_error = (_reference(weight, x) + layer.bias.float() - got).abs().max()
    assert dense_error <= (0.02 if cls is Int8Linear else 0.1) * expected.abs().max()


def test_auto_format_is_int4_on_cpu_and_dense_elsewhere() -> None:
    assert resolve_weight_format("auto", torch.device("cpu")) == "int4"
    assert resolve_weight_format("auto", torch.device("cuda")) == "native"
    with pytest.raises(ValueError, match="weight_format"):
        resolve_weight_format("int3", torch.device("cpu"))


def test_int4_falls_back_to_int8_for_shapes_it_cannot_pack() -> None:
    assert isinstance(make_linear(torch.randn(64, 48), None, "int4"), Int8Linear)


@pytest.fixture(scope="module")
def own_tiny(tiny_gguf: Path):  # a private copy: quantizing must not touch the shared fixture
    return load_model(tiny_gguf)


@pytest.mark.parametrize("fmt", QUANT_FORMATS)
def test_quantized_engine_batched_equals_solo(own_tiny, fmt: str) -> None:
    before = [p.clone() for p in own_tiny.model.parameters()]
    config = EngineConfig(weight_format=fmt, block_size=4, enable_prefix_caching=False)
    params = SamplingParams(max_tokens=10, temperature=0, repetition_penalty=1.3, ignore_eos=True)
    prompts = random_prompts([1, 5, 9, 17, 30])
    engine = LLMEngine(own_tiny, config)
    assert engine.runner.weight_format == fmt
    batched = [tokens for _, tokens in engine.generate(prompts, params)]
    solo = [LLMEngine(own_tiny, config).generate([p], params)[0][1] for p in prompts]
    assert batched == solo
    assert all(len(t) == 10 for t in batched)
    # The loaded model is untouched: other engines on it still get the float weights.
    assert all(torch.equal(a, b) for a, b in zip(before, own_tiny.model.parameters(), strict=True))


@pytest.mark.skipif(
    cpu_kernels() is None, reason="needs the C++ kernels (without them the option is ignored)"
)
def test_engine_by_default_keeps_no_float_copy_and_batches_invisibly(own_tiny) -> None:
    """dense_prefill_weights=False (the default): no int layer holds a float32 copy, so steps of more
    than NATIVE_MAX_TOKENS tokens (a 150-token prompt in one step) run the int kernels too, and a
    prompt's tokens do not depend on what shares its step. True keeps the copy."""
    config = EngineConfig(weight_format="int4", block_size=4, enable_prefix_caching=False)
    engine = LLMEngine(own_tiny, config)
    layers = [m for m in engine.runner.model.modules() if isinstance(m, (Int4Linear, Int8Linear))]
    assert layers and all(layer.dense is None for layer in layers)
    with_copy = EngineConfig(weight_format="int4", dense_prefill_weights=True)
    assert all(
        m.dense is not None
        for m in LLMEngine(own_tiny, with_copy).runner.model.modules()
        if isinstance(m, Int4Linear)
    )
    prompts = random_prompts([150, 7, 40])
    params = SamplingParams(max_tokens=8, temperature=0, ignore_eos=True)
    batched = [tokens for _, tokens in engine.generate(prompts, params)]
    solo = [LLMEngine(own_tiny, config).generate([p], params)[0][1] for p in prompts]
    assert batched == solo and all(len(t) == 8 for t in batched)


def test_bfloat16_weights_run_through_the_engine(own_tiny) -> None:
    engine = LLMEngine(own_tiny, EngineConfig(weight_format="bfloat16", block_size=4))
    params = SamplingParams(max_tokens=6, temperature=0, ignore_eos=True)
    outputs = engine.generate(random_prompts([3, 12]), params)
    assert [len(tokens) for _, tokens in outputs] == [6, 6]
    assert engine.runner.model.weight_bytes_per_token() < own_tiny.model.weight_bytes_per_token()


@pytest.mark.parametrize("fmt", ["float32", "int4"])
def test_runner_memory_counts_every_tensor_it_holds(own_tiny, fmt: str) -> None:
    """What the residency manager charges a loaded engine: parameters, buffers, the packed weights of
    quantized layers (plain attributes, not parameters), the KV blocks it has touched and the swap
    space."""
    config = EngineConfig(weight_format=fmt, block_size=4, kv_cache_bytes=1 << 20, swap_reserve_bytes=1 << 16)
    engine = LLMEngine(own_tiny, config)
    model = engine.runner.model
    packed = sum(m.quant_bytes() for m in model.modules() if isinstance(m, (Int4Linear, Int8Linear)))
    assert (packed > 0) == (fmt == "int4")
    dense = sum(t.nbytes for t in (*model.parameters(), *model.buffers()))
    assert model.held_bytes() == dense + packed
    swap = engine.runner.swap_space
    assert swap.num_blocks > 0
    touched = engine.block_manager.num_touched_blocks
    assert touched == 0
    assert engine.memory_bytes == model.held_bytes() + swap.num_blocks * swap.bytes_per_block


def _q8_0_table(rows: int, dim: int) -> torch.Tensor:
    """A float32 table as a Q8_0 file dequantizes: int8 times a float16 scale per block of 32, each
    block's largest |int| 127 (Q8_0's scale is the block's max |w| / 127)."""
    torch.manual_seed(0)
    q = torch.randint(-127, 128, (rows, dim // 32, 32))
    q[..., 0] = 127 * torch.where(torch.rand(rows, dim // 32) < 0.5, -1, 1)
    d = (torch.rand(rows, dim // 32) * 0.01 + 1e-4).half().float()
    return (q.float() * d[..., None]).view(rows, dim)


def test_q8_embedding_reproduces_a_q8_0_table_exactly() -> None:
    table = _q8_0_table(100, 96)
    embedding = Q8Embedding.from_dense(table)
    assert embedding is not None
    ids = torch.tensor([[3, 0, 99], [42, 42, 7]])
    assert torch.equal(embedding(ids), table[ids])  # bit for bit, any shape of ids
    assert torch.equal(embedding(torch.arange(100)), table)
    assert (embedding.q.nbytes + embedding.scales.nbytes) * 3 < table.nbytes
    assert embedding.bytes_per_token() == 96 + 3 * 4


def test_q8_embedding_refuses_tables_it_cannot_hold_exactly() -> None:
    table = _q8_0_table(100, 96)
    off = table.clone()
    off[57, 40] = torch.nextafter(off[57, 40], torch.tensor(1.0))  # one value not on its block's grid
    assert Q8Embedding.from_dense(off) is None
    assert Q8Embedding.from_dense(torch.randn(100, 96)) is None  # a float table
    assert Q8Embedding.from_dense(torch.randn(100, 40)) is None  # rows not whole blocks
    assert Q8Embedding.from_dense(table.bfloat16()) is None


def test_int_engines_hold_a_q8_0_files_embedding_in_q8_0(tmp_path: Path, own_tiny) -> None:
    """An engine that loads its own model (`from_path`) keeps only the converted weights, with the
    file's Q8_0 embedding as a Q8Embedding; it decodes as one whose lookup reads the float table.
    A float32 file's embedding stays a dense table."""
    path, _ = write_tiny_gguf(tmp_path / "q8.gguf", TinySpec(qtype=gguf.GGMLQuantizationType.Q8_0, seed=8))
    config = EngineConfig(weight_format="int4", block_size=4, enable_prefix_caching=False)
    engine = LLMEngine.from_path(str(path), config)
    model = engine.runner.model
    assert engine.loaded.model is model
    assert isinstance(model.embed_tokens, Q8Embedding)
    assert not [name for name, p in model.named_parameters() if p.dim() == 2]  # no float weight left
    reference = load_model(path)
    dense = reference.model.embed_tokens.weight
    assert torch.equal(model.embed_tokens(torch.arange(dense.shape[0])), dense)
    # The same packed model with the float table: same tokens.
    float_table = LLMEngine(load_model(path, packed_format="int4"), config)
    float_table.runner.model.embed_tokens = reference.model.embed_tokens
    prompts = random_prompts([5, 17])
    params = SamplingParams(max_tokens=8, temperature=0, ignore_eos=True)
    assert engine.generate(prompts, params) == float_table.generate(prompts, params)
    # A decode step reads one Q8_0 row instead of one float32 row, and nothing else differs.
    row_saving = dense.shape[1] * 4 - model.embed_tokens.bytes_per_token()
    assert model.weight_bytes_per_token() == float_table.runner.model.weight_bytes_per_token() - row_saving
    assert isinstance(own_tiny.model.quantize("int4").embed_tokens, nn.Embedding)


QUESTIONS = [
    "What is the capital of France?",
    "Write a Python function that adds two numbers.",
    "Name three colors of the rainbow.",
    "Explain what an operating system does, in one sentence.",
]


@pytest.fixture(scope="module")
def real_loaded(default_gguf_path: Path):
    return load_model(default_gguf_path)


# A quantized model may leave fp32's greedy path only where fp32 itself nearly tied: the two tokens' fp32
# logits (~25 at the top) closer than this. Measured, each prompt alone, 16 tokens: int4 left it twice
# (prompts 2 and 4, at tokens 6 and 10, margins 0.029 each; the float-scale int4 it replaced left it
# only at the second), int8 at the same two. A real loss of precision leaves it where fp32
# was sure.
NEAR_TIE = 0.1


@pytest.mark.real_model
@pytest.mark.parametrize("fmt", QUANT_FORMATS)
def test_quantized_real_model_keeps_its_answers(real_loaded, fmt: str) -> None:
    tok = real_loaded.tokenizer
    prompts = [tok.encode_chat([{"role": "user", "content": q}]) for q in QUESTIONS]
    params = SamplingParams(max_tokens=16, temperature=0, ignore_eos=True)
    exact_engine = LLMEngine(real_loaded, EngineConfig(weight_format="float32"))
    quant_engine = LLMEngine(real_loaded, EngineConfig(weight_format=fmt))
    exact = [exact_engine.generate([p], params)[0] for p in prompts]
    quant = [quant_engine.generate([p], params)[0] for p in prompts]
    assert "Paris" in quant[0][0]
    assert sum(q[1] == e[1] for q, e in zip(quant, exact, strict=True)) >= 2
    for prompt, (_, want), (_, got) in zip(prompts, exact, quant, strict=True):
        split = next((i for i, (a, b) in enumerate(zip(want, got, strict=True)) if a != b), None)
        if split is None:
            continue
        logits = full_logits(real_loaded, prompt + want[:split])[-1]
        margin = (logits[want[split]] - logits[got[split]]).item()
        assert margin < NEAR_TIE, f"{fmt} left fp32's path where fp32 was sure (margin {margin:.3f})"


@pytest.mark.real_model
def test_real_models_int4_copy_holds_its_q8_0_embedding_exactly(real_loaded) -> None:
    dense = real_loaded.model.embed_tokens.weight
    embedding = real_loaded.model.quantize("int4").embed_tokens
    assert isinstance(embedding, Q8Embedding)
    assert torch.equal(embedding(torch.arange(dense.shape[0])), dense)
    assert embedding.q.nbytes + embedding.scales.nbytes < dense.nbytes * 0.3


@pytest.mark.real_model
def test_bfloat16_real_model_answers_like_float32(default_gguf_path: Path) -> None:
    """bfloat16 (the default on CUDA) keeps logits and attention scores in float32: rounded to
    bfloat16, "The" and "L" tied as the first word of the answer below and it read "L'Étoile, ..."."""
    config = EngineConfig(dtype="bfloat16", kv_cache_bytes=64 << 20)
    engine = LLMEngine.from_path(str(default_gguf_path), config)
    assert engine.runner.kv_cache.dtype == torch.bfloat16
    prompt = engine.tokenizer.encode_chat([{"role": "user", "content": QUESTIONS[0]}])
    text, _ = engine.generate([prompt], SamplingParams(max_tokens=12, temperature=0))[0]
    assert text.startswith("The capital of France is Paris")
