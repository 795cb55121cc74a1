"""The head equals ActionFormer's own model (`LocPointTransformer`: backbone, identity FPN, cls / reg
heads) on unpadded features, with its weights loaded through `from_actionformer_state_dict`.

Fixture: tests/golden/actionformer_head.npz, made by tests/golden/make_actionformer_head.py from the
official code.  (With padding the two differ by design: this head keeps padded steps at zero after
every LayerNorm, see `losa/head/blocks.py`.)"""
from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
import torch

from losa.head.actionformer import ActionFormerHead, HeadConfig, from_actionformer_state_dict

pytestmark = pytest.mark.usefixtures("one_torch_thread")

GOLDEN = Path(__file__).resolve().parents[2] / "golden" / "actionformer_head.npz"
CFG = HeadConfig(embd_dim=16, fpn_dim=16, head_dim=16, n_heads=4, window=5, n_levels=4, n_stem=2,
                 regression_ranges=((0, 4), (4, 8), (8, 16), (16, 10000)), path_drop=0.0)


def _golden():
    data = np.load(GOLDEN)
    weights = {k[2:]: torch.from_numpy(data[k]) for k in data.files if k.startswith("w/")}
    levels = sum(k.startswith("cls/") for k in data.files)
    cls = [torch.from_numpy(data[f"cls/{i}"]) for i in range(levels)]
    reg = [torch.from_numpy(data[f"reg/{i}"]) for i in range(levels)]
    return torch.from_numpy(data["input"]), weights, cls, reg


def test_head_matches_actionformer_on_unpadded_features():
    x, weights, want_cls, want_reg = _golden()
    head = ActionFormerHead(x.shape[1], want_cls[0].shape[-1], CFG).eval()
    head.load_state_dict(from_actionformer_state_dict({"state_dict_ema": {f"module.{k}": v for k, v in
                                                                           weights.items()}}))
    with torch.no_grad():
        cls, reg, masks = head(x, torch.ones(x.shape[0], 1, x.shape[2], dtype=torch.bool))
    assert [c.shape for c in cls] == [c.shape for c in want_cls]
    for got, want in zip(cls + reg, want_cls + want_reg):
        torch.testing.assert_close(got, want, rtol=1e-5, atol=2e-5)  # measured: 1.4e-6 at scale 5
    assert all(m.all() for m in masks)


def test_renaming_covers_every_parameter():
    _, weights, _, _ = _golden()
    renamed = from_actionformer_state_dict(weights)
    head = ActionFormerHead(24, 3, CFG)
    assert set(renamed) == set(head.state_dict())
