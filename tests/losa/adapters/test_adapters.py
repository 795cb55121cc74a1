"""Tests for the LoSA adapters (losa/adapters/{short,long,side}.py) and the gated fusion (losa/adapters/fusion.py)."""

from __future__ import annotations

import pytest
import torch

from losa.adapters import (
    LongRangeAdapter,
    ShortRangeAdapter,
    sinusoidal_positions,
)
from losa.adapters.fusion import FUSION_MODES, GatedFusion, LongShortGatedFusion

C, D, T = 32, 8, 12

torch.set_num_threads(2)


def _mask(b: int = 2, t: int = T, valid: tuple[int, ...] = (T, 7)) -> torch.Tensor:
    m = torch.zeros(b, t, dtype=torch.bool)
    for i, n in enumerate(valid):
        m[i, :n] = True
    return m


def _tokens(cells: int, b: int = 2, t: int = T, seed: int = 0) -> torch.Tensor:
    g = torch.Generator().manual_seed(seed)
    return torch.randn(b, t, cells, C, generator=g)


def _perturb_padding(x: torch.Tensor, mask: torch.Tensor) -> torch.Tensor:
    y = x.clone()
    pad = ~mask
    y[pad] = torch.randn_like(y[pad]) * 50 + 7
    return y


def _adapters(grid: int, t_sub: int) -> list[torch.nn.Module]:
    return [
        ShortRangeAdapter(C, D, heads=2, window=2, grid=grid, t_sub=t_sub),
        LongRangeAdapter(C, D, heads=2),
        LongRangeAdapter(C, D, heads=2, local_window=3),
    ]


@pytest.mark.parametrize("grid,t_sub", [(1, 1), (2, 1), (1, 2), (2, 2)])
def test_shapes_and_padding_invariance(grid: int, t_sub: int) -> None:
    torch.manual_seed(0)
    cells = grid * grid * t_sub
    x, mask = _tokens(cells), _mask()
    x2 = _perturb_padding(x, mask)
    for adapter in _adapters(grid, t_sub):
        adapter.eval()
        y = adapter(x, mask)
        assert y.shape == (2, T, D)
        assert torch.isfinite(y).all()
        assert torch.equal(y[~mask], torch.zeros_like(y[~mask])), type(adapter).__name__
        y2 = adapter(x2, mask)
        torch.testing.assert_close(y2[mask], y[mask], rtol=0, atol=1e-6)


@pytest.mark.parametrize("grid,t_sub", [(1, 1), (2, 2)])
def test_short_window_is_local(grid: int, t_sub: int) -> None:
    torch.manual_seed(0)
    w = 2
    adapter = ShortRangeAdapter(C, D, heads=2, window=w, grid=grid, t_sub=t_sub).eval()
    x, mask = _tokens(grid * grid * t_sub, b=1, t=16), torch.ones(1, 16, dtype=torch.bool)
    y = adapter(x, mask)
    t0 = 8
    for s in range(16):
        xs = x.clone()
        xs[0, s] += torch.randn_like(xs[0, s])
        diff = (adapter(xs, mask)[0, t0] - y[0, t0]).abs().max().item()
        if abs(s - t0) <= w:
            assert diff > 1e-5, f"step {s} inside the window did not change step {t0}"
        else:
            assert diff == 0.0, f"step {s} outside the window changed step {t0}"


def test_short_window_sees_every_cell() -> None:
    torch.manual_seed(0)
    adapter = ShortRangeAdapter(C, D, heads=2, window=1, grid=2, t_sub=2).eval()
    x, mask = _tokens(8, b=1, t=6), torch.ones(1, 6, dtype=torch.bool)
    y = adapter(x, mask)
    for cell in range(8):  # a single cell of a neighbouring step matters
        xs = x.clone()
        xs[0, 2, cell] += torch.randn(C)  # not a constant shift: LayerNorm would remove it
        assert (adapter(xs, mask)[0, 3] - y[0, 3]).abs().max() > 1e-6


@pytest.mark.parametrize("local_window", [None, 3])
def test_long_adapter_range(local_window: int | None) -> None:
    torch.manual_seed(0)
    adapter = LongRangeAdapter(C, D, heads=2, local_window=local_window).eval()
    t = 40
    x, mask = _tokens(1, b=1, t=t), torch.ones(1, t, dtype=torch.bool)
    y = adapter(x, mask)
    xs = x.clone()
    xs[0, t - 1] += torch.randn_like(xs[0, t - 1]) * 3
    diff = (adapter(xs, mask)[0, 0] - y[0, 0]).abs().max().item()
    if local_window is None:
        assert diff > 1e-5  # global: the far end reaches step 0
    else:
        assert diff == 0.0  # banded: far steps are invisible
        xs = x.clone()
        xs[0, 3] += torch.randn(C)
        assert (adapter(xs, mask)[0, 0] - y[0, 0]).abs().max() > 1e-6


def test_long_adapter_uses_order() -> None:
    """Position encoding makes the adapter order-aware (pure attention would be permutation-equivariant)."""
    torch.manual_seed(0)
    adapter = LongRangeAdapter(C, D, heads=2).eval()
    x, mask = _tokens(1, b=1, t=10), torch.ones(1, 10, dtype=torch.bool)
    perm = torch.randperm(10)
    y = adapter(x, mask)
    yp = adapter(x[:, perm], mask)
    assert not torch.allclose(yp, y[:, perm], atol=1e-5)


def test_sinusoidal_positions() -> None:
    pe = sinusoidal_positions(5, 7)
    assert pe.shape == (5, 7)
    assert torch.equal(pe[0, 0::2], torch.zeros(4))
    assert torch.equal(pe[0, 1::2], torch.ones(3))
    assert pe.abs().max() <= 1.0


def test_input_validation() -> None:
    adapter = ShortRangeAdapter(C, D, heads=2, grid=2, t_sub=1)
    with pytest.raises(ValueError, match="cells"):
        adapter(_tokens(2), _mask())
    with pytest.raises(ValueError, match="channels"):
        LongRangeAdapter(C, D, heads=2)(torch.randn(2, T, 1, C + 1), _mask())
    with pytest.raises(ValueError, match="mask"):
        LongRangeAdapter(C, D, heads=2)(_tokens(1), _mask().float())
    with pytest.raises(ValueError, match="divisible"):
        LongRangeAdapter(C, 10, heads=4)


def _branch_outputs(n_layers: int, seed: int = 1) -> list[dict[str, torch.Tensor]]:
    g = torch.Generator().manual_seed(seed)
    return [{b: torch.randn(2, T, D, generator=g) for b in ("long", "short")} for _ in range(n_layers)]


@pytest.mark.parametrize("mode", ["gated", "sigmoid", "concat"])
def test_fusion_starts_at_base(mode: str) -> None:
    torch.manual_seed(0)
    fusion = LongShortGatedFusion(C, D, n_layers=3, mode=mode)
    base, mask = _tokens(1)[:, :, 0], _mask()
    out = fusion(base, _branch_outputs(3), mask)
    assert torch.equal(out[mask], base[mask])
    assert torch.equal(out[~mask], torch.zeros_like(out[~mask]))


@pytest.mark.parametrize("mode", FUSION_MODES)
def test_fusion_learns_and_masks(mode: str) -> None:
    torch.manual_seed(0)
    fusion = LongShortGatedFusion(C, D, n_layers=2, mode=mode)
    base, mask = _tokens(1)[:, :, 0], _mask()
    outs = [{k: v.requires_grad_() for k, v in o.items()} for o in _branch_outputs(2)]
    opt = torch.optim.SGD(fusion.parameters(), lr=0.1)
    target = torch.randn_like(base)
    for _ in range(2):
        opt.zero_grad()
        loss = ((fusion(base, outs, mask) - target)[mask] ** 2).mean()
        loss.backward()
        opt.step()
    assert all(o[k].grad is not None and o[k].grad.abs().sum() > 0 for o in outs for k in o)
    out = fusion(base, outs, mask)
    assert not torch.equal(out[mask], base[mask])
    assert torch.equal(out[~mask], torch.zeros_like(out[~mask]))


@pytest.mark.parametrize("mode", ["gated", "sum"])
def test_fusion_is_the_gated_sum_of_projected_branches(mode: str) -> None:
    # computed as one matmul with the gates folded into the stacked projections
    torch.manual_seed(0)
    fusion = LongShortGatedFusion(C, D, n_layers=3, mode=mode)
    if mode == "gated":
        with torch.no_grad():
            fusion.gates.normal_()
    base, mask, outs = _tokens(1)[:, :, 0], _mask(), _branch_outputs(3)
    want = base.clone()
    flat = [o[b] for o in outs for b in ("long", "short")]
    for i, (proj, a) in enumerate(zip(fusion.proj, flat)):
        want = want + (fusion.gates[i] if mode == "gated" else 1.0) * proj(a)
    got = fusion(base, outs, mask)
    torch.testing.assert_close(got[mask], want[mask], rtol=1e-5, atol=1e-5)
    assert torch.equal(got[~mask], torch.zeros_like(got[~mask]))


def test_fusion_single_branch_and_validation() -> None:
    fusion = GatedFusion(C, D, n_layers=2, branches=("long",))
    base, mask = _tokens(1)[:, :, 0], _mask()
    outs = [{"long": o["long"]} for o in _branch_outputs(2)]
    assert fusion(base, outs, mask).shape == base.shape
    with pytest.raises(ValueError, match="2 layers"):
        fusion(base, outs[:1], mask)
    with pytest.raises(ValueError, match="'long'"):
        fusion(base, [{"short": o["long"]} for o in outs], mask)
    with pytest.raises(ValueError, match="fusion mode"):
        LongShortGatedFusion(C, D, 1, mode="max")
