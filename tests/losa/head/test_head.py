"""ActionFormer head: config, blocks, shapes, masking, point bookkeeping, gradients, overfitting."""

from __future__ import annotations

import math

import pytest
import torch

from losa.head.actionformer import ActionFormerHead, HeadConfig, PredictionHead
from losa.head.blocks import TransformerBlock, local_attention, masked_max_pool
from losa.head.losses import TALLoss


pytestmark = pytest.mark.usefixtures("one_torch_thread")

TINY = HeadConfig(
    embd_dim=32, fpn_dim=32, head_dim=32, n_heads=2, window=5, n_levels=3, n_stem=1,
    regression_ranges=((0, 4), (4, 8), (8, 10000)), path_drop=0.0,
)


def _mask(lengths: list[int], t: int) -> torch.Tensor:
    return (torch.arange(t)[None, :] < torch.tensor(lengths)[:, None])[:, None, :]


# --------------------------------------------------------------------------- config
def test_config_defaults_round_trip_and_validation():
    cfg = HeadConfig()
    assert cfg.strides == (1, 2, 4, 8, 16, 32)
    assert cfg.regression_ranges[-1] == (64.0, 10000.0) and cfg.window == 19
    d = cfg.to_dict()
    assert d["regression_ranges"][0] == [0.0, 4.0]
    assert HeadConfig.from_dict(d) == cfg
    with pytest.raises(ValueError, match="regression_ranges"):
        HeadConfig(n_levels=3)
    with pytest.raises(ValueError, match="center_sample"):
        HeadConfig(center_sample="fixed")
    with pytest.raises(ValueError, match="unknown head setting"):
        HeadConfig.from_dict({"n_layers": 3})


# --------------------------------------------------------------------------- blocks
@pytest.mark.parametrize("window", [0, 1, 5, 19])
def test_local_attention_matches_dense_band(window):
    g = torch.Generator().manual_seed(0)
    b, h, t, d = 2, 2, 150, 8
    q, k, v = torch.randn(3, b, h, t, d, generator=g).unbind(0)
    key_mask = torch.rand(b, t, generator=g) > 0.2
    key_mask[1, 100:] = False
    out = local_attention(q, k, v, key_mask, window, block=32)
    i = torch.arange(t)
    band = (i[:, None] - i[None]).abs() <= window // 2 if window else torch.ones(t, t, dtype=torch.bool)
    allowed = band[None, None] & key_mask[:, None, None, :]
    scores = (q @ k.transpose(-1, -2) / math.sqrt(d)).masked_fill(~allowed, float("-inf"))
    ref = torch.softmax(scores, -1).nan_to_num(0.0) @ v
    assert torch.allclose(out, ref, atol=1e-5)


def test_fully_masked_rows_give_zeros_not_nan():
    q = torch.randn(1, 2, 10, 4)
    out = local_attention(q, q, q, torch.zeros(1, 10, dtype=torch.bool), window=3)
    assert torch.isfinite(out).all() and (out == 0).all()
    block = TransformerBlock(8, 2, window=3, stride=2)
    y, m = block(torch.randn(1, 8, 10), torch.zeros(1, 1, 10, dtype=torch.bool))
    assert y.shape == (1, 8, 5) and (y == 0).all() and not m.any()


def test_masked_max_pool_ignores_padding():
    x = torch.tensor([[[-1.0, -2.0, -3.0, -4.0]]])
    mask = torch.tensor([[[True, True, True, False]]])
    # windows (kernel 3, stride 2, pad 1) centred at 0 and 2: {-1,-2} -> -1, {-2,-3,pad} -> -2
    assert masked_max_pool(x, mask, 2).tolist() == [[[-1.0, -2.0]]]


# --------------------------------------------------------------------------- head
def test_default_head_shapes_t2304():
    torch.manual_seed(0)
    head = ActionFormerHead(48, 20).eval()
    assert head.cls_head.out.conv.bias.detach().allclose(torch.full((20,), -math.log(99.0)))
    x = torch.randn(1, 48, 2304)
    with torch.no_grad():
        cls, off, masks = head(x, _mask([2304], 2304))
    assert [c.shape[1] for c in cls] == [2304, 1152, 576, 288, 144, 72]
    assert all(c.shape == (1, n, 20) for c, n in zip(cls, [2304, 1152, 576, 288, 144, 72]))
    assert all(o.shape == (1, c.shape[1], 2) and (o >= 0).all() for o, c in zip(off, cls))
    assert all(m.dtype == torch.bool and m.all() for m in masks)


def test_odd_length_shapes_and_points():
    torch.manual_seed(0)
    head = ActionFormerHead(16, 3, HeadConfig(embd_dim=32, fpn_dim=32, head_dim=32, n_heads=2)).eval()
    assert head.pad_to_stride(1000) == 1024
    with torch.no_grad():
        cls, off, masks = head(torch.randn(2, 16, 1000), _mask([1000, 700], 1000))
    lengths = [1000, 500, 250, 125, 63, 32]  # ceil(1000 / stride)
    assert [c.shape[1] for c in cls] == lengths == [o.shape[1] for o in off] == [m.shape[1] for m in masks]
    # level l step i is valid iff its level-0 position i * stride lies inside the video
    for m, s in zip(masks, head.strides):
        pos = torch.arange(m.shape[1]) * s
        assert torch.equal(m[0], pos < 1000) and torch.equal(m[1], pos < 700)
    pts = head.points(1000)
    assert [p.shape for p in pts] == [(n, 4) for n in lengths]
    assert all(torch.equal(a, b) for a, b in zip(pts, head.points(lengths)))
    for p, s, (lo, hi) in zip(pts, head.strides, head.cfg.regression_ranges):
        assert torch.equal(p[:, 0], torch.arange(p.shape[0], dtype=torch.float32) * s)
        assert (p[:, 1] == lo).all() and (p[:, 2] == hi).all() and (p[:, 3] == s).all()
    with pytest.raises(ValueError, match="levels"):
        head.points([10, 5])


def test_padding_never_changes_valid_outputs():
    torch.manual_seed(0)
    head = ActionFormerHead(16, 4, TINY).eval()
    t, n = 100, 61
    x = torch.randn(2, 16, t)
    mask = _mask([t, n], t)
    with torch.no_grad():
        cls, off, masks = head(x, mask)
        x2 = x.clone()
        x2[1, :, n:] = 1e3 * torch.randn(16, t - n)  # garbage in the padded steps
        cls2, off2, _ = head(x2, mask)
        cls3, off3, masks3 = head(x[1:, :, :n], mask[1:, :, :n])  # the same video alone, unpadded
        cls4, _, _ = head(x[:1], mask[:1])  # the first video alone
    for lvl in range(3):
        k = int(masks[lvl][1].sum())
        assert k == masks3[lvl].shape[1]
        assert torch.equal(cls[lvl][1, :k], cls2[lvl][1, :k]) and torch.equal(off[lvl][1, :k], off2[lvl][1, :k])
        assert torch.allclose(cls[lvl][1, :k], cls3[lvl][0], atol=1e-5)
        assert torch.allclose(off[lvl][1, :k], off3[lvl][0], atol=1e-5)
        assert torch.allclose(cls[lvl][0], cls4[lvl][0], atol=1e-5)


@pytest.mark.parametrize("kernel", [1, 3, 5])
def test_towers_run_levels_as_one_sequence_like_level_by_level(kernel):
    # the levels are joined with kernel // 2 zero steps: what each level's own zero padding gives
    torch.manual_seed(0)
    tower = PredictionHead(8, 12, 3, n_layers=3, kernel=kernel, with_ln=True)
    lengths, valid = [40, 20, 10], [[40, 27], [20, 14], [10, 7]]
    feats = [torch.randn(2, 8, t) for t in lengths]
    for masks in ([_mask(v, t) for v, t in zip(valid, lengths)], [None, None, None]):
        feats = [f if m is None else f * m for f, m in zip(feats, masks)]
        joined = tower(feats, masks)
        alone = tower._per_level(feats, masks)
        for a, b in zip(joined, alone):
            torch.testing.assert_close(a, b, rtol=0, atol=1e-5)
            assert a.shape == b.shape


def test_bad_inputs_raise():
    head = ActionFormerHead(16, 4, TINY)
    with pytest.raises(ValueError, match=r"\[B, 16, T\]"):
        head(torch.randn(1, 8, 20), _mask([20], 20))
    with pytest.raises(ValueError, match="mask must be bool"):
        head(torch.randn(1, 16, 20), torch.ones(1, 1, 20))


def test_gradients_reach_every_parameter_but_not_padding():
    torch.manual_seed(0)
    head = ActionFormerHead(16, 4, HeadConfig(**{**TINY.to_dict(), "path_drop": 0.1})).train()
    x = torch.randn(2, 16, 40, requires_grad=True)
    mask = _mask([40, 25], 40)
    cls, off, _ = head(x, mask)
    loss = sum(c.sum() for c in cls) + sum(o.sum() for o in off)
    loss.backward()
    missing = [n for n, p in head.named_parameters() if p.grad is None or not torch.isfinite(p.grad).all()]
    assert not missing
    dead = [n for n, p in head.named_parameters() if p.grad.abs().sum() == 0]
    assert not dead, dead
    assert (x.grad[1, :, 25:] == 0).all() and x.grad[1, :, :25].abs().sum() > 0


def test_tiny_head_overfits_one_video():
    torch.manual_seed(0)
    t, c, k = 64, 16, 2
    segs = torch.tensor([[10.0, 20.0], [35.0, 60.0]])
    labels = torch.tensor([0, 1])
    proto = torch.randn(k, c)
    x = 0.5 * torch.randn(1, c, t)
    for (a, b), lab in zip(segs.long().tolist(), labels.tolist()):
        x[0, :, a:b] += proto[lab][:, None]
    mask = _mask([t], t)
    head = ActionFormerHead(c, k, TINY).train()
    points = head.points(t)
    loss_fn = TALLoss(k, center_sample=TINY.center_sample, center_radius=TINY.center_radius)
    gt_cls, _ = loss_fn.assign(points, [(segs, labels)])
    loss_fn.loss_normalizer.fill_(float((gt_cls.sum(-1) > 0).sum()))  # steady normaliser from the start
    opt = torch.optim.Adam(head.parameters(), lr=2e-3)
    history = []
    for _ in range(100):
        cls, off, masks = head(x, mask)
        out = loss_fn(cls, off, masks, points, [(segs, labels)])
        opt.zero_grad()
        out["final_loss"].backward()
        opt.step()
        history.append(float(out["final_loss"].detach()))
    assert all(math.isfinite(v) for v in history)
    assert history[-1] < 0.5 * history[0], (history[0], history[-1])


def test_bf16_autocast_forward_and_loss_are_finite():
    torch.manual_seed(0)
    head = ActionFormerHead(16, 3, TINY).train()
    x, mask = torch.randn(2, 16, 50), _mask([50, 30], 50)
    with torch.autocast("cpu", dtype=torch.bfloat16):
        cls, off, masks = head(x, mask)
        out = TALLoss(3)(cls, off, masks, head.points(50), [(torch.tensor([[5.0, 20.0]]), torch.tensor([2]))] * 2)
    assert out["final_loss"].dtype == torch.float32 and torch.isfinite(out["final_loss"])
    out["final_loss"].backward()
    assert all(torch.isfinite(p.grad).all() for p in head.parameters() if p.grad is not None)
