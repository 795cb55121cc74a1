"""AdaTAD† side adapter (losa/adapters/side.py): OpenTAD parity, init, cells, padding, locality."""

from __future__ import annotations

import math
from pathlib import Path

import numpy as np
import pytest
import torch

from losa.adapters import SideAdapter

GOLDEN = Path(__file__).parents[2] / "golden" / "opentad_adapter.npz"
NAMES = {"down_proj": "down", "dwconv": "dwconv", "conv": "pwconv", "up_proj": "up", "gamma": "gamma"}


def _golden_adapter() -> tuple[SideAdapter, dict]:
    g = dict(np.load(GOLDEN))
    ad = SideAdapter(int(g["embed"]), int(g["hidden"]), grid=int(g["grid"]), t_sub=int(g["t_sub"]))
    state = {}
    for key, val in g.items():
        if key.startswith("w_"):
            mod, _, leaf = key[2:].partition("__")
            state[f"{NAMES[mod]}.{leaf}" if leaf else NAMES[mod]] = torch.from_numpy(val)
    ad.load_state_dict(state, strict=True)
    return ad, g


def test_matches_opentad_adapter_with_identical_weights() -> None:
    ad, g = _golden_adapter()
    steps, cells = int(g["steps"]), int(g["t_sub"]) * int(g["grid"]) ** 2
    x = torch.from_numpy(g["x"]).reshape(1, steps, cells, -1)
    mask = torch.ones(1, steps, dtype=torch.bool)
    want = torch.from_numpy(g["y"]).reshape(1, steps, cells, -1)
    with torch.no_grad():
        torch.testing.assert_close(ad.delta_cells(x, mask), want, rtol=0, atol=1e-5)
        # pooled (before ``up``, which is linear) = mean of OpenTAD's per-cell outputs
        torch.testing.assert_close(ad.delta(x, mask), want.mean(dim=2), rtol=0, atol=1e-5)
        torch.testing.assert_close(ad(x, mask), x.mean(dim=2) + want.mean(dim=2), rtol=0, atol=1e-5)


def test_opentad_initialisation() -> None:
    torch.manual_seed(0)
    c, d = 512, 64
    ad = SideAdapter(c, d)
    w = ad.down.weight
    assert w.std().item() == pytest.approx(0.02, rel=0.05) and w.abs().max() <= 2.0
    assert ad.dwconv.weight.std().item() == pytest.approx(math.sqrt(2 / 3), rel=0.15)
    assert ad.pwconv.weight.std().item() == pytest.approx(math.sqrt(2 / d), rel=0.05)
    for b in (ad.down.bias, ad.dwconv.bias, ad.pwconv.bias, ad.up.weight, ad.up.bias):
        assert torch.equal(b, torch.zeros_like(b))
    assert ad.gamma.tolist() == [1.0]
    x, mask = torch.randn(1, 5, 1, c), torch.ones(1, 5, dtype=torch.bool)
    assert torch.equal(ad(x, mask), x[:, :, 0])             # identity at init (up is zero)


def _random_adapter(c: int, d: int, grid: int, t_sub: int) -> SideAdapter:
    torch.manual_seed(1)
    ad = SideAdapter(c, d, grid=grid, t_sub=t_sub)
    torch.nn.init.normal_(ad.up.weight, std=0.2)
    return ad


def test_padding_and_temporal_locality_per_spatial_location() -> None:
    c, d, grid, t_sub, t = 16, 8, 2, 2, 7
    ad = _random_adapter(c, d, grid, t_sub)
    x = torch.randn(2, t, t_sub * grid * grid, c)
    mask = torch.ones(2, t, dtype=torch.bool)
    mask[1, 5:] = False
    with torch.no_grad():
        base = ad.delta_cells(x, mask)
        x2 = x.clone()
        x2[1, 5:] = 1e3 * torch.randn_like(x2[1, 5:])          # padding cannot leak
        torch.testing.assert_close(ad.delta_cells(x2, mask), base, rtol=0, atol=1e-6)
        assert torch.equal(base[1, 5:], torch.zeros_like(base[1, 5:]))
        # padded video = the same video alone, unpadded (OpenTAD's zero padding at the end)
        alone = ad.delta_cells(x[1:, :5], torch.ones(1, 5, dtype=torch.bool))
        torch.testing.assert_close(base[1:, :5], alone, rtol=0, atol=1e-6)
        # one cell (step 3, slice 1, location 2) changes: time neighbours (k=3, t-major slices)
        # at the same location change, no other location does
        x3 = x.clone()
        x3[0, 3, 1 * 4 + 2] += 5.0
        diff = (ad.delta_cells(x3, mask) - base)[0].abs().amax(-1).reshape(t, t_sub, 4)
        changed = sorted((int(s), int(sl), int(loc)) for s, sl, loc in (diff > 0).nonzero())
        assert changed == [(3, 0, 2), (3, 1, 2), (4, 0, 2)]


def test_bad_cells_are_refused() -> None:
    ad = SideAdapter(16, 8, grid=2, t_sub=1)
    with pytest.raises(ValueError, match="2 cells per step, adapter expects 4"):
        ad(torch.randn(1, 3, 2, 16), torch.ones(1, 3, dtype=torch.bool))
