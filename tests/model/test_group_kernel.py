"""The 8-bit grouped layer (group_linear.Int8GroupLinear over csrc/group_gemm.cpp): weights q * d + m with
int8 q and float d, m per group of 16 inputs, the form every GGUF block format has exactly."""

from __future__ import annotations

import pytest
import torch

from llmasos.model import group_linear
from llmasos.model.block_layout import ACTIVATION_MAX, quantize_activations
from llmasos.model.group_linear import Int8GroupLinear
from llmasos.model.native import cpu_kernels

needs_kernels = pytest.mark.skipif(cpu_kernels() is None, reason="the C++ kernels do not build here")


def random_groups(
    out_features: int, in_features: int, seed: int = 0
) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """Random (q int8 over its whole range, d > 0, m of either sign) per group of 16."""
    g = torch.Generator().manual_seed(seed)
    q = torch.randint(-128, 128, (out_features, in_features), generator=g, dtype=torch.int8)
    d = torch.rand(out_features, in_features // 16, generator=g) * 2e-3 + 1e-4
    m = (torch.rand(out_features, in_features // 16, generator=g) - 0.5) * 0.1
    return q, d, m


def dense(q: torch.Tensor, d: torch.Tensor, m: torch.Tensor) -> torch.Tensor:
    groups = q.view(q.shape[0], -1, 16).float() * d[..., None] + m[..., None]
    return groups.view(q.shape)


@needs_kernels
# 48 rows: three blocks of 16, so panels of two leave a one-block rest; 1,536 inputs: 96 groups
@pytest.mark.parametrize("shape", [(48, 64), (64, 96), (576, 1536)])
@pytest.mark.parametrize("n", [1, 2, 3, 4, 7, 9, 70])
def test_grouped_kernel_is_the_product_of_the_weights_and_the_rounded_activations(shape, n: int) -> None:
    q, d, m = random_groups(*shape)
    bias = torch.randn(shape[0])
    layer = Int8GroupLinear.from_groups(q, d, m, bias)
    assert layer.kernels is not None and layer.dense is None  # no float copy of the weights
    x = torch.randn(n, shape[1], generator=torch.Generator().manual_seed(n)) * 3
    got = layer(x)
    xr = quantize_activations(x).double()
    w = dense(q, d, m).double()
    want = xr @ w.T + bias.to(torch.bfloat16).double()
    # only float32 rounding of the sums remains: far below a step of the activations' rounding
    bound = 1e-5 * (xr.abs() @ w.abs().T) + 1e-6
    assert ((got.double() - want).abs() <= bound).all()


@needs_kernels
def test_grouped_kernel_gives_each_token_the_same_bits_whatever_its_batch() -> None:
    q, d, m = random_groups(80, 128)
    layer = Int8GroupLinear.from_groups(q, d, m, None)
    x = torch.randn(9, 128) * 2
    whole = layer(x)
    for n in range(1, 9):  # in place: one pass of up to 4 tokens, or two
        assert torch.equal(layer(x[:n]), whole[:n]), f"{n} tokens"
    assert torch.equal(layer(x[6:7]), whole[6:7])


@needs_kernels
@pytest.mark.parametrize("sign", [1.0, -1.0])
def test_grouped_sums_at_the_largest_integers_do_not_wrap(sign: float) -> None:
    q = torch.full((16, 64), -128, dtype=torch.int8)
    d, m = torch.ones(16, 4), torch.zeros(16, 4)
    layer = Int8GroupLinear.from_groups(q, d, m, None)
    x = torch.full((2, 64), sign * 5.0)  # every activation rounds to +-ACTIVATION_MAX
    want = -128 * 64 * sign * 5.0
    torch.testing.assert_close(layer(x), torch.full((2, 16), want), rtol=1e-6, atol=0)
    assert ACTIVATION_MAX * 128 * 16 < 2**31  # a group's sum fits int32 (group_gemm.cpp)


def test_without_kernels_the_layer_multiplies_its_float_weights(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(group_linear, "cpu_kernels", lambda: None)
    q, d, m = random_groups(32, 64)
    layer = Int8GroupLinear.from_groups(q, d, m, None)
    assert layer.kernels is None and layer.native_tensors() is None
    x = torch.randn(5, 64)
    want = x.to(torch.bfloat16).float() @ dense(q, d, m).T
    torch.testing.assert_close(layer(x).float(), want, rtol=1e-2, atol=1e-3)


def test_groups_that_do_not_fit_the_layout_are_refused() -> None:
    q, d, m = random_groups(32, 64)
    with pytest.raises(ValueError, match="do not fit"):
        Int8GroupLinear.from_groups(q[:20], d[:20], m[:20], None)
    with pytest.raises(ValueError, match="do not fit"):
        Int8GroupLinear.from_groups(q, d[:, :2], m[:, :2], None)
