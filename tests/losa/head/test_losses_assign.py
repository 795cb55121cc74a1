"""Focal / DIoU losses, ActionFormer label assignment and TALLoss, checked against hand-computed numbers."""

from __future__ import annotations

import math

import pytest
import torch

from losa.head.assign import assign_labels
from losa.head.losses import TALLoss, diou_loss_1d, sigmoid_focal_loss

LN2 = math.log(2.0)


def _f(t: torch.Tensor) -> float:
    return float(t.detach())


# --------------------------------------------------------------------------- focal loss
def test_focal_loss_hand_computed():
    logits = torch.tensor([0.0, 2.0, -1.0])
    targets = torch.tensor([1.0, 0.0, 0.0])
    # (0, y=1):  alpha=0.25, p_t=0.5           -> 0.25 * 0.5^2 * ln 2                 = 0.0433217
    # (2, y=0):  1-alpha=0.75, 1-p_t=sigmoid(2) -> 0.75 * 0.880797^2 * ln(1+e^2)      = 1.2375586
    # (-1, y=0): 0.75 * sigmoid(-1)^2 * ln(1+e^-1) = 0.75 * 0.268941^2 * 0.313262      = 0.0169935
    expected = torch.tensor([0.0433217, 1.2375586, 0.0169935])
    per = sigmoid_focal_loss(logits, targets, reduction="none")
    assert torch.allclose(per, expected, atol=1e-6)
    assert sigmoid_focal_loss(logits, targets) == pytest.approx(1.2978739, abs=1e-6)  # default "sum"
    assert sigmoid_focal_loss(logits, targets, reduction="mean") == pytest.approx(1.2978739 / 3, abs=1e-6)


def test_focal_loss_gamma0_no_alpha_is_bce():
    logits = torch.tensor([0.3, -1.2, 2.5])
    targets = torch.tensor([1.0, 0.0, 1.0])
    bce = torch.nn.functional.binary_cross_entropy_with_logits(logits, targets, reduction="sum")
    assert sigmoid_focal_loss(logits, targets, alpha=-1, gamma=0) == pytest.approx(float(bce), rel=1e-6)


def test_focal_loss_bad_reduction():
    with pytest.raises(ValueError, match="reduction"):
        sigmoid_focal_loss(torch.zeros(2), torch.zeros(2), reduction="avg")


# --------------------------------------------------------------------------- DIoU
def test_diou_identical_is_zero():
    off = torch.tensor([[1.0, 2.0], [0.5, 3.0]])
    assert diou_loss_1d(off, off.clone()) == pytest.approx(0.0, abs=1e-7)


def test_diou_disjoint_exceeds_one():
    # [0, 1] vs [3, 4]: IoU 0, centre distance 3, enclosing length 4 -> 1 + (3/4)^2 = 1.5625
    pred = torch.tensor([[0.0, 1.0]])
    target = torch.tensor([[3.0, 4.0]])
    loss = diou_loss_1d(pred, target, fmt="segments")
    assert loss == pytest.approx(1.5625, abs=1e-6)
    assert loss > 1.0


def test_diou_known_overlap_offsets():
    # offsets (1, 2) -> [-1, 2]; (2, 2) -> [-2, 2]: inter 3, union 4, IoU 0.75;
    # centres 0.5 vs 0 -> distance 0.5, enclosing 4 -> penalty 0.015625; loss = 0.265625
    pred = torch.tensor([[1.0, 2.0]])
    target = torch.tensor([[2.0, 2.0]])
    assert diou_loss_1d(pred, target) == pytest.approx(0.265625, abs=1e-6)
    # the same pair as (start, end) segments
    assert diou_loss_1d(torch.tensor([[-1.0, 2.0]]), torch.tensor([[-2.0, 2.0]]), fmt="segments") == pytest.approx(
        0.265625, abs=1e-6
    )


def test_diou_reductions_and_grad():
    pred = torch.tensor([[1.0, 2.0], [0.0, 1.0]], requires_grad=True)
    target = torch.tensor([[2.0, 2.0], [0.0, 1.0]])
    none = diou_loss_1d(pred, target, reduction="none").detach()
    assert none.shape == (2,)
    mean = diou_loss_1d(pred, target, reduction="mean").detach()
    assert float(mean) == pytest.approx(float(none.mean()))
    diou_loss_1d(pred, target).backward()
    assert torch.isfinite(pred.grad).all() and pred.grad[0].abs().sum() > 0
    assert float(diou_loss_1d(pred[:0], target[:0], reduction="mean").detach()) == 0.0


# --------------------------------------------------------------------------- assignment
def _tiny_points() -> torch.Tensor:
    """Level 0: t = 0..11, stride 1, range [0, 4]; level 1: t = 0, 2, ..., 10, stride 2, range [4, 1e4]."""
    l0 = torch.tensor([[float(t), 0.0, 4.0, 1.0] for t in range(12)])
    l1 = torch.tensor([[float(t), 4.0, 10000.0, 2.0] for t in range(0, 12, 2)])
    return torch.cat([l0, l1])


def _row(points: torch.Tensor, t: float, stride: float) -> int:
    hit = ((points[:, 0] == t) & (points[:, 3] == stride)).nonzero()
    return int(hit[0, 0])


def test_assign_center_radius_range_and_shortest():
    pts = _tiny_points()
    segs = torch.tensor([[2.0, 7.0], [3.0, 5.0]])  # A (len 5, class 0), B (len 2, class 1)
    labels = torch.tensor([0, 1])
    cls, reg = assign_labels(pts, segs, labels, num_classes=3, center_sample="radius", center_radius=1.5)
    assert cls.shape == (18, 3) and reg.shape == (18, 2)
    # Hand analysis (radius 1.5 * stride around the centre, strict inside, max offset in range):
    # L0 t=4: inside A ([3,6] window) and B ([3,5]) -> shortest is B: class 1, offsets (1, 1)
    # L0 t=5: only A (reach 3 <= 4): class 0, offsets (3, 2)
    # L1 t=6: A's window [1.5, 7.5] -> reach max(4, 1) = 4 in [4, 1e4]: class 0, offsets (4, 1) / 2
    # L1 t=4 is inside A and B but reach 3 and 1 < 4 -> negative; L0 t=3 is outside A's centre window.
    expected = {_row(pts, 4, 1): (1, (1.0, 1.0)), _row(pts, 5, 1): (0, (3.0, 2.0)), _row(pts, 6, 2): (0, (2.0, 0.5))}
    pos = (cls.sum(1) > 0).nonzero().flatten().tolist()
    assert sorted(pos) == sorted(expected)
    for row, (label, off) in expected.items():
        assert cls[row].tolist() == [1.0 if k == label else 0.0 for k in range(3)]
        assert reg[row].tolist() == list(off)
    neg = cls.sum(1) == 0
    assert (reg[neg] == 0).all()


def test_assign_without_center_sampling():
    pts = _tiny_points()
    segs = torch.tensor([[2.0, 7.0]])
    cls, reg = assign_labels(pts, segs, torch.tensor([0]), 1, center_sample="none")
    # L0: strictly inside (2, 7) -> t = 3..6, reach max(t-2, 7-t) = 4,3,3,4 all <= 4
    # L1: t = 4 (reach 3 < 4: no), t = 6 (reach 4: yes)
    pos = sorted((cls[:, 0] > 0).nonzero().flatten().tolist())
    assert pos == sorted([_row(pts, t, 1) for t in (3, 4, 5, 6)] + [_row(pts, 6, 2)])
    assert reg[_row(pts, 3, 1)].tolist() == [1.0, 4.0]


def test_assign_equal_length_tie_sets_both_classes():
    pts = _tiny_points()
    segs = torch.tensor([[2.0, 7.0], [2.0, 7.0]])
    cls, _ = assign_labels(pts, segs, torch.tensor([0, 2]), 3)
    assert cls[_row(pts, 5, 1)].tolist() == [1.0, 0.0, 1.0]


def test_assign_no_ground_truth_all_negative():
    pts = _tiny_points()
    cls, reg = assign_labels(pts, torch.zeros(0, 2), torch.zeros(0, dtype=torch.long), 4)
    assert cls.shape == (18, 4) and (cls == 0).all() and (reg == 0).all()


def test_assign_rejects_bad_labels_and_segments():
    pts = _tiny_points()
    with pytest.raises(ValueError, match="label 5"):
        assign_labels(pts, torch.tensor([[1.0, 3.0]]), torch.tensor([5]), 3)
    with pytest.raises(ValueError, match="segment 0"):
        assign_labels(pts, torch.tensor([[3.0, 1.0]]), torch.tensor([0]), 3)


# --------------------------------------------------------------------------- TALLoss
def _outputs(points, num_classes, valid_upto=None):
    """All-zero logits, offsets = the assigned targets (so the regression loss is exactly zero)."""
    lens = [p.shape[0] for p in points]
    logits = [torch.zeros(1, n, num_classes, requires_grad=True) for n in lens]
    masks = [torch.ones(1, n, dtype=torch.bool) for n in lens]
    if valid_upto is not None:
        for m, p in zip(masks, points):
            m[0] = p[:, 0] < valid_upto
    return logits, masks


def test_tal_loss_hand_computed_and_ema():
    pts = [_tiny_points()[:12], _tiny_points()[12:]]
    segs, labels = torch.tensor([[2.0, 7.0], [3.0, 5.0]]), torch.tensor([0, 1])
    k = 3
    loss_fn = TALLoss(k).train()
    _, gt_off = loss_fn.assign(pts, [(segs, labels)])
    logits, masks = _outputs(pts, k)
    offsets = [gt_off[:, :12].clone().requires_grad_(), gt_off[:, 12:].clone().requires_grad_()]
    out = loss_fn(logits, offsets, masks, pts, [(segs, labels)])
    num_pos = 3  # see test_assign_center_radius_range_and_shortest
    norm = 0.9 * 100 + 0.1 * num_pos
    assert float(loss_fn.loss_normalizer) == pytest.approx(norm)
    # zero logits: positives cost 0.25 * 0.25 * ln2, negatives 0.75 * 0.25 * ln2 (18 points x 3 classes)
    focal = num_pos * 0.0625 * LN2 + (18 * k - num_pos) * 0.1875 * LN2
    assert _f(out["cls_loss"]) == pytest.approx(focal / norm, rel=1e-5)
    assert _f(out["reg_loss"]) == pytest.approx(0.0, abs=1e-6)
    assert _f(out["final_loss"]) == pytest.approx(focal / norm, rel=1e-5)
    out["final_loss"].backward()
    assert logits[0].grad is not None and logits[0].grad.abs().sum() > 0
    # a second step updates the EMA again; eval mode leaves it alone
    loss_fn(logits, offsets, masks, pts, [(segs, labels)])
    assert float(loss_fn.loss_normalizer) == pytest.approx(0.9 * norm + 0.1 * num_pos)
    loss_fn.eval()
    before = float(loss_fn.loss_normalizer)
    loss_fn(logits, offsets, masks, pts, [(segs, labels)])
    assert float(loss_fn.loss_normalizer) == before


def test_tal_loss_masks_label_smoothing_and_adaptive_weight():
    pts = [_tiny_points()[:12], _tiny_points()[12:]]
    segs, labels = torch.tensor([[2.0, 7.0]]), torch.tensor([0])
    k = 2
    logits, masks = _outputs(pts, k, valid_upto=5.5)  # L0: t=0..5 valid (6), L1: t=0,2,4 valid (3)
    offsets = [torch.ones(1, 12, 2), torch.ones(1, 6, 2)]
    loss_fn = TALLoss(k, init_loss_norm=10.0, loss_norm_momentum=0.0, reg_weight=-1)
    out = loss_fn(logits, offsets, masks, pts, [(segs, labels)])
    # A = [2, 7], centre 4.5, radius window [3, 6] -> valid positives: L0 t=4 (offsets (2, 3)) and
    # L0 t=5 (offsets (3, 2)); the L1 t=6 positive is masked out.  Momentum 0 -> normaliser = 2.
    assert float(loss_fn.loss_normalizer) == pytest.approx(2.0)
    n_valid = 6 + 3
    focal = 2 * 0.0625 * LN2 + (n_valid * k - 2) * 0.1875 * LN2
    assert _f(out["cls_loss"]) == pytest.approx(focal / 2.0, rel=1e-5)
    # predicted (1,1) = [-1,1] vs target (2,3) = [-2,3]: IoU 2/5, centre dist 0.5, enclosing 5
    # -> 1 - 0.4 + 0.01 = 0.61; the mirrored (3,2) case is the same
    assert _f(out["reg_loss"]) == pytest.approx(2 * 0.61 / 2.0, rel=1e-5)
    # adaptive weight cls/reg (detached) -> final = cls + (cls / reg) * reg = 2 * cls
    assert _f(out["final_loss"]) == pytest.approx(_f(out["cls_loss"]) * 2, rel=1e-5)
    # label smoothing 0.1 with K=2: negatives target 0.1/3, positives 0.9 + 0.1/3
    smooth = TALLoss(k, init_loss_norm=10.0, loss_norm_momentum=0.0, label_smoothing=0.1)
    out_s = smooth(logits, offsets, masks, pts, [(segs, labels)])
    gt = torch.zeros(n_valid, k)
    gt[4, 0] = gt[5, 0] = 1.0
    gt = gt * 0.9 + 0.1 / 3
    ref = sigmoid_focal_loss(torch.zeros(n_valid, k), gt) / 2.0
    assert _f(out_s["cls_loss"]) == pytest.approx(float(ref), rel=1e-5)


def test_tal_loss_no_positives_and_batch_check():
    pts = [_tiny_points()[:12], _tiny_points()[12:]]
    logits, masks = _outputs(pts, 2)
    offsets = [torch.ones(1, 12, 2, requires_grad=True), torch.ones(1, 6, 2, requires_grad=True)]
    loss_fn = TALLoss(2)
    out = loss_fn(logits, offsets, masks, pts, [(torch.zeros(0, 2), torch.zeros(0, dtype=torch.long))])
    assert _f(out["reg_loss"]) == 0.0
    out["final_loss"].backward()  # graph stays connected to the offsets
    assert offsets[0].grad is not None
    with pytest.raises(ValueError, match="batch of 1"):
        loss_fn(logits, offsets, masks, pts, [])
