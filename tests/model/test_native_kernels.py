"""The C++ CPU kernels (llmasos/model/csrc): the int4 and int8 GEMMs against their dequantized weights,
batch invariance, the whole-model decode step against the torch layers, and the fallback without them."""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
from dataclasses import replace
from pathlib import Path

import pytest
import torch

from llmasos.model import native
from llmasos.model.attention import AttentionMetadata, paged_attention
from llmasos.model.block_layout import (
    ACTIVATION_MAX,
    pack_int4_blocks,
    pack_int8_blocks,
    quantize_activations,
    unpack_int4_blocks,
)
from llmasos.model.native import cpu_kernels
from llmasos.model.quant_linear import Int4Linear, Int8Linear
from tests.helpers.step_meta import chunk_meta, chunk_positions, decode_meta

kernels = cpu_kernels()
needs_kernels = pytest.mark.skipif(
    kernels is None, reason="C++ kernels unavailable (no AVX2 or compiler, LLMASOS_NATIVE=0, or build failed)"
)


def test_kernels_build_wherever_the_cpu_and_a_compiler_allow() -> None:
    # A failed build leaves the engine on its slower torch paths and skips every kernel test here, so
    # a broken kernel source would pass as 30 skips: where nothing excuses it, it is a failure.
    compiler = shutil.which(os.environ.get("CXX", "c++")) or shutil.which("g++")
    if not (native._cpu_has_avx2() and compiler and native.native_enabled()):
        pytest.skip("no AVX2, no C++ compiler, or LLMASOS_NATIVE=0")
    assert kernels is not None, "the C++ kernels failed to build: see the warning from llmasos.model.native"


def test_the_kernels_are_built_for_the_instruction_set_of_this_cpu(monkeypatch) -> None:
    vnni_cpu = {"avx", "avx2", "fma", "avx512f", "avx512bw", "avx512vl", "avx512_vnni"}
    monkeypatch.delenv("LLMASOS_NATIVE_ISA", raising=False)
    monkeypatch.setattr(native, "_cpu_flags", lambda: vnni_cpu)
    assert native.kernel_isa() == "avx512vnni"
    assert "-mavx512vnni" in native.compile_flags()
    vnni_folder = native.build_directory()
    monkeypatch.setattr(native, "_cpu_flags", lambda: vnni_cpu - {"avx512_vnni"})
    assert native.kernel_isa() == "avx2"
    assert not [flag for flag in native.compile_flags() if "avx512" in flag]
    assert native.build_directory() != vnni_folder  # a venv moved to another CPU builds that CPU's variant
    monkeypatch.setattr(native, "_cpu_flags", lambda: vnni_cpu)
    monkeypatch.setenv("LLMASOS_NATIVE_ISA", "avx2")  # forced, for A/B runs
    assert native.kernel_isa() == "avx2"
    monkeypatch.setattr(native, "_cpu_flags", lambda: vnni_cpu - {"avx512_vnni"})
    monkeypatch.setenv("LLMASOS_NATIVE_ISA", "avx512vnni")  # never forced onto a CPU without it
    assert native.kernel_isa() == "avx2"


@needs_kernels
def test_the_avx2_and_the_vnni_builds_give_the_same_bits(tiny_gguf, tmp_path) -> None:
    """The VNNI build fuses the GEMMs' multiply-adds; integer sums are exact, so every output (GEMMs, and
    whole C++ steps over prompt chunks and decode tokens) is the AVX2 build's bit for bit. Builds the
    AVX2 variant (about a minute, once) in a second process."""
    from tests.helpers.kernel_outputs import kernel_outputs

    if native.kernel_isa() != "avx512vnni":
        pytest.skip("this CPU has no AVX-512 VNNI: the AVX2 build is the only one it runs")
    saved = tmp_path / "avx2.pt"
    env = {**os.environ, "LLMASOS_NATIVE_ISA": "avx2"}
    done = subprocess.run(
        [sys.executable, "-m", "tests.helpers.kernel_outputs", str(tiny_gguf), str(saved)],
        env=env,
        cwd=Path(__file__).parents[2],
        capture_output=True,
        text=True,
        timeout=900,
    )
    assert done.returncode == 0, done.stderr[-3000:]
    avx2 = torch.load(saved)
    assert avx2["isa"] == "avx2"
    ours = kernel_outputs(tiny_gguf)
    assert ours.keys() == avx2["outputs"].keys()
    differ = [name for name, value in ours.items() if not torch.equal(value, avx2["outputs"][name])]
    assert not differ, f"the builds differ in {differ}"


def _activation_error_bound(weight: torch.Tensor, x: torch.Tensor) -> torch.Tensor:
    """Largest error the rounded activations (one scale per token, to nearest) can add: each element moves
    by at most half a step, h = amax / (2 * ACTIVATION_MAX), so |Δy| <= Σ |w| * h."""
    step = x.abs().amax(-1, keepdim=True) / (2 * ACTIVATION_MAX)  # (n, 1)
    return step * weight.abs().sum(-1)  # (n, out)


@needs_kernels
# 48 rows: three blocks of 16, so AVX-512's two-block panels leave a one-block rest
@pytest.mark.parametrize("shape", [(64, 96), (48, 64), (3072, 576)])
@pytest.mark.parametrize("n", [1, 2, 3, 5, 8])
def test_int4_kernel_is_within_activation_rounding_of_dequantized_weights(shape, n: int) -> None:
    torch.manual_seed(n)
    layer = Int4Linear(torch.randn(*shape) * 0.05, torch.randn(shape[0]) * 0.1, max_quant_tokens=8)
    x = torch.randn(n, shape[1])
    expected = x.double() @ layer.dense.double().t() + layer.bias.double()
    got = layer(x)
    assert got.dtype == torch.float32
    bound = _activation_error_bound(layer.dense.double(), x.double()) + 1e-5 * expected.abs().max()
    assert ((got.double() - expected).abs() <= bound).all()


@needs_kernels
# 1-8 tokens read the weights in place, in passes of up to 4; 9 and 70: the panels' 3- or 4-token tiles
# and every rest of 1-3 tokens
@pytest.mark.parametrize("n", [3, 4, 5, 8, 9, 70])
def test_int4_kernel_gives_each_token_the_same_result_whatever_its_batch(n: int) -> None:
    torch.manual_seed(0)
    # 13 blocks of 16 rows: AVX-512's panels of 2 blocks leave a one-block rest; 512 inputs: at 7 tokens
    # four chunks of 4 groups, their sums kept between chunks; at 70 (above kChunkMaxTokens) one panel
    layer = Int4Linear(torch.randn(208, 512) * 0.05, None, max_quant_tokens=8)
    x = torch.randn(n, 512)
    batched = kernels.q4_linear(x, layer.qs, layer.k, layer.c, layer.row_scale, None)
    for t in range(n):
        assert torch.equal(batched[t], layer(x[t : t + 1])[0])


@needs_kernels
def test_steps_that_read_the_weights_in_place_give_the_panels_bits() -> None:
    """Steps of 1-8 tokens (weights read in place, a 4-bit run as k sum(q x) + c sum(x)) and of 9 (the
    panels, q k + c unpacked) give every token the same bits, for the 4-bit layers and the int8 head."""
    torch.manual_seed(0)
    int4 = Int4Linear(torch.randn(208, 512) * 0.05, None, max_quant_tokens=8)
    int8 = Int8Linear(torch.randn(1008, 96), None, max_quant_tokens=8)  # 63 blocks: a one-block rest
    for layer, x in ((int4, torch.randn(9, 512) * 3), (int8, torch.randn(9, 96))):
        whole = layer(x)
        for n in range(1, 9):
            assert torch.equal(layer(x[:n]), whole[:n]), f"{type(layer).__name__}, {n} tokens"
            assert torch.equal(layer(x[9 - n :]), whole[9 - n :]), f"{type(layer).__name__}, last {n} tokens"


@needs_kernels
def test_int4_integer_constants_fit_the_kernels_bound_and_keep_each_group() -> None:
    """Groups whose ranges differ by 10^4 within a row, an all-zero row, a constant group and a row of
    negative weights: every q * k + c fits the kernels' bound (their int32 sums rely on it), and every
    weight is within 8 row steps (rounding k and c) of its group's q * d + m."""
    torch.manual_seed(0)
    weight = torch.randn(16, 256) * torch.logspace(-3, 1, 256)
    weight[1] = 0
    weight[2, :32] = 5.0
    weight[3] = -weight[3].abs()
    layer = Int4Linear(weight, None, max_quant_tokens=8, keep_dense=True)
    q, k, c = layer.integer_weights()
    ints = q.view(16, 8, 32).int() * k[..., None].int() + c[..., None].int()
    assert torch.equal(ints * layer.row_scale[:, None, None], layer.dense.view(16, 8, 32))
    assert ints.abs().max() <= kernels.Q4_INT_MAX
    assert (c.int().abs() <= kernels.Q4_INT_MAX).all()
    assert ((15 * k.int() + c.int()).abs() <= kernels.Q4_INT_MAX).all()
    groups = weight.view(16, 8, 32)
    lo, hi = groups.amin(-1, keepdim=True), groups.amax(-1, keepdim=True)
    d = ((hi - lo) / 15).clamp(min=1e-12)
    exact = torch.round((groups - lo) / d).clamp(0, 15) * d + lo
    steps = layer.row_scale[:, None, None] * 8 + 1e-6
    assert ((layer.dense.view(16, 8, 32) - exact).abs() <= steps).all()
    assert torch.equal(layer.dense[1], torch.zeros(256))


@needs_kernels
@pytest.mark.parametrize("sign", [1.0, -1.0])
def test_int4_sums_at_the_largest_integers_do_not_wrap(sign: float) -> None:
    """Constant rows make every weight the largest integer (c = Q4_INT_MAX - 8) and a constant token
    makes every activation ACTIVATION_MAX: each int32 lane's run (16 products) then sums to 2.145e9, just
    under 2^31. A longer run (or a wider range) would wrap, and the result would be garbage."""
    layer = Int4Linear(torch.full((16, 576), 3.0 * sign), None, max_quant_tokens=8)
    assert layer.c.abs().min() == kernels.Q4_INT_MAX - 8
    for n in (1, 3, 5, 8, 9):  # the weights read in place (one pass, two) and the panels
        y = layer(torch.ones(n, 576))
        torch.testing.assert_close(y, torch.full((n, 16), 3.0 * sign * 576), rtol=1e-4, atol=0)


@needs_kernels
@pytest.mark.parametrize("sign", [1.0, -1.0])
def test_int4_runs_whose_factored_products_wrap_still_sum_exactly(sign: float) -> None:
    """Groups spanning [-3, 3] with all but their first weight at the top get k = 1091 (about 16382 / 15)
    and c near -Q4_INT_MAX: with every activation at +-ACTIVATION_MAX, the in-place kernels' k * sum(q x)
    (15 of a run's 16 q at 15) is about +-4.0e9 and wraps in int32, while the run's true sum fits. The
    wrapped lanes must add up to it exactly: the panels' bits (q k + c unpacked), the weights' product."""
    weight = torch.full((16, 576), 3.0)
    weight[:, ::32] = -3.0
    layer = Int4Linear(weight, None, max_quant_tokens=8, keep_dense=True)
    assert layer.k.int().min() * 15 * 15 * ACTIVATION_MAX > 2**31
    x = torch.full((9, 576), sign)
    panels = layer(x)
    for n in (1, 3, 5, 8):
        assert torch.equal(layer(x[:n]), panels[:n]), f"{n} tokens"
    torch.testing.assert_close(panels, x @ layer.dense.t(), rtol=1e-4, atol=0)


def test_block_layouts_put_each_weight_where_the_kernels_read_it() -> None:
    """4-bit: in group g of block b, byte 2r + e of chunk j holds elements 2j + e (low nibble) and
    2j + 16 + e (high) of row 16b + r; int8: byte 2r + e of pair p is w[16b + r][2p + e]."""
    torch.manual_seed(0)
    q = torch.randint(0, 16, (48, 96), dtype=torch.uint8)
    packed = pack_int4_blocks(q)
    assert packed.shape == (3, 3, 256)
    assert torch.equal(unpack_int4_blocks(packed), q)
    for b, g, j, r, e in [(0, 0, 0, 0, 0), (2, 1, 7, 15, 1), (1, 2, 3, 9, 0)]:
        byte = int(packed[b, g, 32 * j + 2 * r + e])
        row, col = 16 * b + r, 32 * g + 2 * j + e
        assert (byte & 15, byte >> 4) == (int(q[row, col]), int(q[row, col + 16]))
    w = torch.randint(-127, 128, (32, 64), dtype=torch.int8)
    packed8 = pack_int8_blocks(w)
    assert packed8.shape == (2, 32, 32)
    assert int(packed8[1, 5, 2 * 3 + 1]) == int(w[16 + 3, 2 * 5 + 1])


@needs_kernels
@pytest.mark.parametrize("n", [1, 5])
def test_int8_head_with_rows_past_whole_blocks_pads_them_and_drops_their_outputs(n: int) -> None:
    """A vocabulary that is not a multiple of 16 (1,001 rows here) gets zero rows to fill its last block."""
    torch.manual_seed(n)
    layer = Int8Linear(torch.randn(1001, 64), None, max_quant_tokens=8, keep_dense=True)
    assert layer.qweight.shape == (63, 32, 32)
    x = torch.randn(n, 64)
    got = layer(x)
    assert got.shape == (n, 1001) and got.is_contiguous()
    expected = x.double() @ layer.dense.double().t()
    bound = _activation_error_bound(layer.dense.double(), x.double()) + 1e-5 * expected.abs().max()
    assert ((got.double() - expected).abs() <= bound).all()


@needs_kernels
@pytest.mark.parametrize("n", [1, 3, 4, 9])  # weights read in place, the panels' tiles and their rests
def test_int8_head_kernel_is_within_activation_rounding_of_dequantized_weights(n: int) -> None:
    torch.manual_seed(n)
    layer = Int8Linear(torch.randn(1008, 96), None, max_quant_tokens=8)  # 63 blocks: a one-block rest
    x = torch.randn(n, 96) * torch.logspace(-2, 1, 96)
    expected = x.double() @ layer.dense.double().t()
    got = layer(x)
    bound = _activation_error_bound(layer.dense.double(), x.double()) + 1e-5 * expected.abs().max()
    assert ((got.double() - expected).abs() <= bound).all()
    for t in range(n):  # and each token's logits do not depend on what shares its step
        assert torch.equal(got[t], layer(x[t : t + 1])[0])


@needs_kernels
def test_rounded_activations_are_the_documented_rounding() -> None:
    assert kernels.ACTIVATION_MAX == ACTIVATION_MAX  # the Python reference's range is the kernels' own
    torch.manual_seed(0)
    x = torch.randn(5, 96) * torch.logspace(-3, 2, 96)  # elements of very different ranges
    x[1] = 0  # an all-zero token has scale 0
    assert torch.equal(kernels.round_activations(x), quantize_activations(x))


@needs_kernels
@pytest.mark.parametrize("cache_dtype", [torch.float32, torch.bfloat16], ids=str)
# (heads, kv heads, head_dim): groups of 3, 1 (MHA), 2, 4 and 7 (taken 4 + 3) heads; a head_dim with an
# 8-wide tail, and one that is no multiple of 8 (the plain loop).
@pytest.mark.parametrize(
    "heads, kv_heads, dim", [(6, 2, 16), (8, 8, 64), (8, 4, 72), (16, 4, 64), (14, 2, 32), (4, 2, 20)]
)
def test_decode_attention_kernel_equals_the_padded_torch_path(
    cache_dtype: torch.dtype, heads: int, kv_heads: int, dim: int
) -> None:
    """Four sequences of different lengths over scattered slots: the kernel reads each sequence's own
    slots; the torch path gathers a padded copy and masks it. Same output, and the same cache writes."""
    torch.manual_seed(0)
    num_slots = 200
    lengths = torch.tensor([1, 7, 30, 12])
    perm = torch.randperm(num_slots)
    kv_slots = torch.zeros(4, 30, dtype=torch.long)
    bias = torch.zeros(4, 1, 1, 30)
    for b, n in enumerate(lengths.tolist()):
        kv_slots[b, :n] = perm[b * 40 : b * 40 + n]
        bias[b, ..., n:] = float("-inf")
    slot_mapping = kv_slots[torch.arange(4), lengths - 1]
    q, k, v = torch.randn(4, heads, dim), torch.randn(4, kv_heads, dim), torch.randn(4, kv_heads, dim)
    caches = [torch.randn(num_slots, kv_heads, dim).to(cache_dtype) for _ in range(2)]
    outs = []
    for context_lens in (lengths, None):
        meta = AttentionMetadata(
            slot_mapping, kv_slots, None, None, None, decode=True, decode_bias=bias, context_lens=context_lens
        )
        k_cache, v_cache = caches[0].clone(), caches[1].clone()
        outs.append((paged_attention(q, k, v, k_cache, v_cache, meta), k_cache, v_cache))
    torch.testing.assert_close(outs[0][0], outs[1][0], atol=1e-5, rtol=1e-5)
    assert torch.equal(outs[0][1], outs[1][1]) and torch.equal(outs[0][2], outs[1][2])


def _prefill_meta(slots: torch.Tensor) -> AttentionMetadata:
    n = len(slots)
    causal = torch.ones(n, n, dtype=torch.bool).tril()
    return AttentionMetadata(
        slot_mapping=slots,
        kv_slots=slots[None],
        query_index=torch.arange(n)[None],
        query_valid=torch.ones(1, n, dtype=torch.bool),
        mask=causal[None, None],
        out_index=torch.arange(n),
    )


@needs_kernels
def test_bfloat16_cache_attention_is_the_float32_kernel_on_the_widened_cache() -> None:
    """The bfloat16 kernel widens each element exactly and then does the float32 kernel's arithmetic."""
    torch.manual_seed(1)
    heads, kv_heads, dim, num_slots = 9, 3, 64, 300
    lengths = torch.tensor([1, 5, 130, 64, 200])
    kv_slots = torch.stack([torch.randperm(num_slots)[:200] for _ in lengths])
    q = torch.randn(len(lengths), heads, dim)
    k16, v16 = (torch.randn(num_slots, kv_heads, dim).to(torch.bfloat16) for _ in range(2))
    narrow = kernels.decode_attention(q, k16, v16, kv_slots, lengths)
    wide = kernels.decode_attention(q, k16.float(), v16.float(), kv_slots, lengths)
    assert torch.equal(narrow, wide)


@needs_kernels
@pytest.mark.parametrize("cache_dtype", [torch.float32, torch.bfloat16], ids=str)
def test_decode_step_in_cpp_equals_the_torch_layers(tiny_loaded, cache_dtype: torch.dtype) -> None:
    """Three sequences of different lengths (padded keys), one decode step: the C++ forward step and the
    torch layers (running the same int4 kernels per projection) agree, and write the same KV."""
    model = tiny_loaded.model.quantize("int4")
    assert model.native_layers is not None
    c = model.config
    cache = torch.zeros(c.num_layers, 2, 3 * 32, c.num_kv_heads, c.head_dim, dtype=cache_dtype)
    lengths = [5, 11, 2]
    torch.manual_seed(0)
    for b, length in enumerate(lengths):  # prefill through the torch path
        ids = torch.randint(0, c.vocab_size, (length,))
        model(ids, torch.arange(length), cache, _prefill_meta(b * 32 + torch.arange(length)))
    positions = torch.tensor(lengths)
    meta = decode_meta(lengths, 32)
    ids = torch.randint(0, c.vocab_size, (3,))
    native_cache, torch_cache = cache.clone(), cache.clone()
    native_hidden = model(ids, positions, native_cache, meta)
    native_layers, model.native_layers = model.native_layers, None  # the same model through its torch layers
    torch_hidden = model(ids, positions, torch_cache, meta)
    # Not bit-equal: where float rounding order puts an activation on the other side of an int16
    # rounding boundary the products move by one step (1/32767 of its block's largest value), which the
    # layers carry on; a wrong index, head or table would be off by O(1).
    torch.testing.assert_close(native_hidden, torch_hidden, atol=1e-3, rtol=1e-3)
    # bfloat16 keeps 8 bits of mantissa: values a hair apart may round to neighbouring steps (2^-8).
    tol = 1e-3 if cache_dtype == torch.float32 else 1e-2
    torch.testing.assert_close(native_cache.float(), torch_cache.float(), atol=tol, rtol=tol)
    if cache_dtype == torch.bfloat16:
        # The step rounds exactly as torch does: from the same state, its layer-0 keys and values (which
        # no attention has touched yet) written to a float32 cache and narrowed by torch are the rows
        # it wrote to the bfloat16 cache.
        model.native_layers = native_layers
        wide_cache = cache.float()
        model(ids, positions, wide_cache, meta)
        new = meta.slot_mapping
        assert torch.equal(wide_cache[0][:, new].to(torch.bfloat16), native_cache[0][:, new])


@needs_kernels
@pytest.mark.parametrize("cache_dtype", [torch.float32, torch.bfloat16], ids=str)
def test_prompt_chunks_in_the_cpp_step_equal_the_torch_layers(tiny_loaded, cache_dtype: torch.dtype) -> None:
    """One step carrying a whole prompt, a later chunk of another over its cached start, and a third
    sequence's decode token: the C++ forward step and the torch layers agree, and write the same KV."""
    model = tiny_loaded.model.quantize("int4", keep_dense=False)
    assert model.native_layers is not None and not model.native_keeps_dense
    c = model.config
    cache = torch.zeros(c.num_layers, 2, 3 * 32, c.num_kv_heads, c.head_dim, dtype=cache_dtype)
    torch.manual_seed(0)
    ids = [torch.randint(0, c.vocab_size, (n,)) for n in (7, 11, 5)]
    first = chunk_meta([32 + torch.arange(5), 64 + torch.arange(4)], [5, 4])  # seqs 1 and 2 start
    model(torch.cat([ids[1][:5], ids[2][:4]]), chunk_positions(first), cache, first)
    meta = chunk_meta([torch.arange(7), 32 + torch.arange(11), 64 + torch.arange(5)], [7, 6, 1])
    step_ids, positions = torch.cat([ids[0], ids[1][5:], ids[2][4:]]), chunk_positions(meta)
    assert positions.tolist() == [*range(7), *range(5, 11), 4]
    native_cache, torch_cache = cache.clone(), cache.clone()
    native_hidden = model(step_ids, positions, native_cache, meta)
    native_layers, model.native_layers = model.native_layers, None  # the same model through its torch layers
    try:
        torch_hidden = model(step_ids, positions, torch_cache, meta)
    finally:
        model.native_layers = native_layers
    # As for the decode step: equal up to activations landing on the other side of an int16 rounding step.
    torch.testing.assert_close(native_hidden, torch_hidden, atol=1e-3, rtol=1e-3)
    tol = 1e-3 if cache_dtype == torch.float32 else 1e-2
    torch.testing.assert_close(native_cache.float(), torch_cache.float(), atol=tol, rtol=tol)
    assert native_cache[:, :, meta.slot_mapping].abs().amax() > 0  # every new token's row was written


@needs_kernels
def test_the_cpp_step_gives_a_prompt_the_same_bits_however_it_is_chunked(tiny_loaded) -> None:
    """A 23-token prompt in one step, or in chunks of 8, 1 and 14 beside another sequence's tokens:
    the same KV rows and the same hidden state for its last token, bit for bit."""
    model = tiny_loaded.model.quantize("int4", keep_dense=False)
    c = model.config
    torch.manual_seed(1)
    prompt, other = torch.randint(0, c.vocab_size, (23,)), torch.randint(0, c.vocab_size, (16,))
    slots = torch.randperm(64)[:23]  # scattered blocks
    whole = torch.zeros(c.num_layers, 2, 128, c.num_kv_heads, c.head_dim, dtype=torch.bfloat16)
    meta = chunk_meta([slots], [23])
    assert model._native_step_kind(23, whole.dtype, meta) == "chunks"
    want = model(prompt, chunk_positions(meta), whole, meta)[-1]
    chunked = torch.zeros_like(whole)
    done = 0
    for size, beside in ((8, 3), (1, 5), (14, 8)):
        meta = chunk_meta([64 + torch.arange(beside), slots[: done + size]], [beside, size])
        ids = torch.cat([other[:beside], prompt[done : done + size]])
        got = model(ids, chunk_positions(meta), chunked, meta)[-1]
        done += size
    assert torch.equal(got, want)
    assert torch.equal(chunked[:, :, slots], whole[:, :, slots])


@needs_kernels
def test_step_weights_refuse_a_layer_list_they_cannot_read(tiny_loaded) -> None:
    model = tiny_loaded.model.quantize("int4", keep_dense=False)
    assert len(model.native_layers) == tiny_loaded.config.num_layers
    with pytest.raises(RuntimeError, match="22 tensors per layer"):
        kernels.StepWeights([torch.zeros(3)])
    with pytest.raises(RuntimeError, match="float32 norms"):
        kernels.StepWeights([torch.zeros(4, dtype=torch.float64)] * 22)


@needs_kernels
def test_the_cpp_step_refuses_chunk_offsets_that_would_read_outside_the_step(tiny_loaded) -> None:
    model = tiny_loaded.model.quantize("int4", keep_dense=False)
    c = model.config
    cache = torch.zeros(c.num_layers, 2, 64, c.num_kv_heads, c.head_dim)
    meta = replace(chunk_meta([torch.arange(6)], [6]), query_start=torch.tensor([0, 9]))  # 9 of 6 tokens
    with pytest.raises(RuntimeError, match="query_start must run from 0 to the token count"):
        model(torch.zeros(6, dtype=torch.long), torch.arange(6), cache, meta)
    meta = chunk_meta([torch.tensor([0, 1, 2, 900])], [4])  # a slot past the cache
    with pytest.raises(RuntimeError, match="slot"):
        model(torch.zeros(4, dtype=torch.long), torch.arange(4), cache, meta)


def test_without_kernels_the_model_keeps_its_torch_paths(tiny_loaded, monkeypatch) -> None:
    monkeypatch.setenv("LLMASOS_NATIVE", "0")
    assert cpu_kernels() is None
    model = tiny_loaded.model.quantize("int4")
    assert model.native_layers is None
    layer = model.layers[0].qkv_proj
    assert layer.kernels is None
    x = torch.randn(2, layer.in_features)
    # torch's int4 kernel: bfloat16 activations and output, within bf16 rounding of the dequantized weights
    expected = x.bfloat16().float() @ layer.dense.t()
    assert (layer(x).float() - expected).abs().max() <= 2**-7 * expected.abs().max()


@needs_kernels
def test_argmax_rows_answers_as_torch_argmax_does() -> None:
    """Greedy sampling's argmax: the first index of the largest value (ties, tails past the last full
    vector, rows of -inf) and the first NaN where a row has one, as torch.argmax gives them."""
    torch.manual_seed(0)
    rows = [torch.randn(shape) for shape in ((32, 49152), (1, 7), (3, 8), (5, 17), (2, 1000))]
    special = torch.full((5, 40), float("-inf"))
    special[1, [5, 30]] = 3.0  # a tie: the first wins
    special[2, [9, 33]] = float("nan")  # the first NaN
    special[3, 39] = float("nan")  # a NaN in the tail
    special[4, :] = 1.0  # all equal
    ties = torch.zeros(2, 100)
    ties[0, 50:] = 1.0
    for x in (*rows, special, ties):
        assert torch.equal(kernels.argmax_rows(x), x.argmax(dim=-1))
    with pytest.raises(RuntimeError, match="contiguous float32"):
        kernels.argmax_rows(torch.zeros(4, 8, dtype=torch.float64))


@needs_kernels
def test_copy_blocks_moves_exactly_the_named_blocks_and_refuses_bad_ids() -> None:
    torch.manual_seed(0)
    src, dst = torch.randn(3, 2, 10, 4, 2, 8), torch.randn(3, 2, 6, 4, 2, 8)
    before = dst.clone()
    kernels.copy_blocks(src, torch.tensor([7, 0, 3]), dst, torch.tensor([1, 5, 2]))
    for s, d in ((7, 1), (0, 5), (3, 2)):
        assert torch.equal(dst[:, :, d], src[:, :, s])
    untouched = [0, 3, 4]
    assert torch.equal(dst[:, :, untouched], before[:, :, untouched])
    with pytest.raises(RuntimeError, match="bad block id"):
        kernels.copy_blocks(src, torch.tensor([10]), dst, torch.tensor([0]))


@needs_kernels
def test_forward_step_swiglu_handles_extreme_gate_values() -> None:
    """The forward step's vectorized SwiGLU (its own exp) at gate values where e^-v over- or underflows:
    silu(v) is v for large v and 0 for very negative v, never inf or nan."""
    gate = torch.tensor([-200.0, -90.0, -20.0, -1.0, 0.0, 1.0, 20.0, 90.0, 200.0] + [0.5] * 7)
    up = torch.full_like(gate, 2.0)
    expected = torch.nn.functional.silu(gate.double()) * 2.0
    got = kernels.swiglu(torch.cat([gate, up])[None])[0]
    assert torch.isfinite(got).all()
    torch.testing.assert_close(got.double(), expected, rtol=1e-6, atol=1e-30)


@needs_kernels
def test_a_killed_builds_lock_file_does_not_hang_the_next_load() -> None:
    """torch's build `lock`, left behind by a build that was killed, is cleared, not waited on forever."""
    from llmasos.model.native import build_directory

    stale = build_directory() / "lock"
    stale.touch()
    code = "from llmasos.model.native import cpu_kernels; print(cpu_kernels() is not None)"
    done = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=120)
    assert done.stdout.strip() == "True", done.stderr
    assert not stale.exists()
