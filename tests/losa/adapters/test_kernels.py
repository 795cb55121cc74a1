"""The adapters' kernels (losa/adapters/short.py, long.py, common.py) equal what they replace, in
values and gradients: both banded-attention paths, the 3x3 conv as one mixing matmul, the norm folded
into its projections."""

from __future__ import annotations

import pytest
import torch

from losa.adapters.common import norm_linear
from losa.adapters.short import (
    _blocked_attention,
    _shift_operators,
    _shifted_attention,
    cell_conv2d,
)


def _grads(out: torch.Tensor, inputs: tuple[torch.Tensor, ...], seed: int = 1) -> tuple[torch.Tensor, ...]:
    g = torch.randn(out.shape, generator=torch.Generator().manual_seed(seed))
    return torch.autograd.grad((out * g).sum(), inputs)


@pytest.mark.parametrize("cells,slots,window", [(1, 1, 2), (2, 2, 1), (8, 2, 2), (32, 8, 2), (12, 3, 0), (4, 1, 5)])
@pytest.mark.parametrize("with_bias", [True, False])
def test_shifted_attention_equals_blocked(cells: int, slots: int, window: int, with_bias: bool) -> None:
    torch.manual_seed(0)
    t, b, h, hd = 23, 3, 2, 4
    q = torch.randn(t, b, h, hd, requires_grad=True)
    k, v = (torch.randn(t, b, h, cells, hd, requires_grad=True) for _ in range(2))
    bias = torch.randn(t, b, h, 2 * window + 1, slots, requires_grad=True) if with_bias else None
    mask = torch.arange(t)[None] < torch.tensor([23, 9, 1])[:, None]
    inputs = (q, k, v) + ((bias,) if with_bias else ())
    want = _blocked_attention(q, k, v, mask, window, bias)
    got = _shifted_attention(q, k, v, mask, window, bias)
    rows = mask.T                                              # padded query steps are meaningless
    torch.testing.assert_close(got[rows], want[rows], rtol=0, atol=2e-6)
    keep = rows[..., None, None].float()
    for gg, gw in zip(_grads(got * keep, inputs), _grads(want * keep, inputs)):
        torch.testing.assert_close(gg, gw, rtol=1e-5, atol=2e-6)


@pytest.mark.parametrize("grid", [1, 2, 3])
def test_cell_conv2d_equals_conv2d(grid: int) -> None:
    torch.manual_seed(0)
    d = 6
    conv = torch.nn.Conv2d(d, d, 3, padding=1)
    x = torch.randn(10, grid * grid, d, requires_grad=True)
    want = conv(x.reshape(10, grid, grid, d).permute(0, 3, 1, 2)).permute(0, 2, 3, 1).reshape(x.shape)
    got = cell_conv2d(x, conv.weight, conv.bias, _shift_operators(1, grid, grid)[9:18])
    torch.testing.assert_close(got, want, rtol=0, atol=1e-6)
    params = (x, conv.weight, conv.bias)
    for gg, gw in zip(_grads(got, params), _grads(want, params)):
        torch.testing.assert_close(gg, gw, rtol=1e-5, atol=1e-5)


@pytest.mark.parametrize("input_grad", [False, True])
def test_norm_linear_equals_norm_then_linears(input_grad: bool) -> None:
    torch.manual_seed(0)
    norm, lin1, lin2 = torch.nn.LayerNorm(16), torch.nn.Linear(16, 5), torch.nn.Linear(16, 3, bias=False)
    with torch.no_grad():                                      # a non-trivial affine
        norm.weight.normal_()
        norm.bias.normal_()
    x = torch.randn(4, 7, 16, requires_grad=input_grad)
    want = torch.cat([lin1(norm(x)), lin2(norm(x))], dim=-1)
    got = norm_linear(x, norm, lin1, lin2)
    torch.testing.assert_close(got, want, rtol=0, atol=2e-6)
    params = (norm.weight, norm.bias, lin1.weight, lin1.bias, lin2.weight) + ((x,) if input_grad else ())
    for gg, gw in zip(_grads(got, params), _grads(want, params)):
        torch.testing.assert_close(gg, gw, rtol=1e-5, atol=1e-5)
    plain = torch.nn.LayerNorm(16, elementwise_affine=False)
    torch.testing.assert_close(norm_linear(x, plain, lin1), lin1(plain(x)), rtol=0, atol=2e-6)


@pytest.mark.parametrize("mode", ["spacetime", "pooled"])
def test_padded_cells_never_leak_even_when_not_finite(mode: str) -> None:
    """Both adapters zero padded steps before anything mixes steps: NaN / inf in padded cells leave
    the valid outputs exactly as zero padding does."""
    from losa.adapters import LongRangeAdapter, ShortRangeAdapter

    torch.manual_seed(0)
    x, mask = torch.randn(2, 9, 8, 16), torch.arange(9)[None] < torch.tensor([9, 5])[:, None]
    clean = x.masked_fill(~mask[:, :, None, None], 0.0)
    dirty = clean.clone()
    dirty[1, 5:, ::2] = float("nan")
    dirty[1, 6:, 1::2] = float("inf")
    for ad in (LongRangeAdapter(16, 8, heads=2), ShortRangeAdapter(16, 8, heads=2, window=2, grid=2, t_sub=2, mode=mode)):
        ad.eval()
        assert torch.equal(ad(dirty, mask), ad(clean, mask))
