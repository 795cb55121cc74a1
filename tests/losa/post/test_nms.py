"""Soft-NMS (gaussian / linear / hard), segment voting and head-output decoding."""

from __future__ import annotations

import math

import pytest
import torch

from losa.post.nms import seg_voting, segment_iou, soft_nms
from losa.post.postprocess import decode_predictions, postprocess


def _t(rows):
    return torch.tensor(rows, dtype=torch.float32)


def test_identical_segments_gaussian_decay():
    segs = _t([[0.0, 10.0], [0.0, 10.0]])
    s, sc, lab = soft_nms(segs, torch.tensor([0.9, 0.8]), torch.tensor([3, 3]), sigma=0.5)
    # IoU 1 -> second score * exp(-1 / 0.5) = 0.8 * e^-2 = 0.1082682
    assert sc.tolist() == pytest.approx([0.9, 0.8 * math.exp(-2.0)], abs=1e-6)
    assert sc[1] == pytest.approx(0.1082682, abs=1e-6)
    assert lab.tolist() == [3, 3]
    assert s.tolist() == [[0.0, 10.0], [0.0, 10.0]]


def test_partial_overlap_methods():
    segs = _t([[0.0, 10.0], [5.0, 15.0]])  # IoU = 5 / 15 = 1/3
    scores, labels = torch.tensor([0.9, 0.8]), torch.tensor([0, 0])
    _, sc, _ = soft_nms(segs, scores, labels, method="gaussian", sigma=0.5)
    assert sc[1] == pytest.approx(0.8 * math.exp(-(1 / 9) / 0.5), abs=1e-6)  # 0.6405899
    _, sc, _ = soft_nms(segs, scores, labels, method="linear", iou_threshold=0.1)
    assert sc[1] == pytest.approx(0.8 * (2 / 3), abs=1e-6)
    _, sc, _ = soft_nms(segs, scores, labels, method="linear", iou_threshold=0.5)
    assert sc[1] == pytest.approx(0.8, abs=1e-6)  # below the threshold: untouched
    s, sc, _ = soft_nms(segs, scores, labels, method="hard", iou_threshold=0.1)
    assert sc.tolist() == pytest.approx([0.9]) and s.tolist() == [[0.0, 10.0]]
    s, sc, _ = soft_nms(segs, scores, labels, method="hard", iou_threshold=0.5)
    assert sc.tolist() == pytest.approx([0.9, 0.8])


def test_multiclass_does_not_cross_suppress():
    segs = _t([[0.0, 10.0], [0.0, 10.0]])
    scores = torch.tensor([0.9, 0.8])
    _, sc, lab = soft_nms(segs, scores, torch.tensor([0, 1]), method="hard", multiclass=True)
    assert sc.tolist() == pytest.approx([0.9, 0.8]) and lab.tolist() == [0, 1]
    _, sc, _ = soft_nms(segs, scores, torch.tensor([0, 1]), method="gaussian", multiclass=True)
    assert sc.tolist() == pytest.approx([0.9, 0.8])
    _, sc, _ = soft_nms(segs, scores, torch.tensor([0, 1]), method="hard", multiclass=False)
    assert sc.tolist() == pytest.approx([0.9])


def test_max_num_min_score_and_sorting():
    segs = _t([[2.0 * i, 2.0 * i + 1.0] for i in range(10)])  # disjoint
    scores = torch.tensor([0.1, 0.5, 0.3, 0.9, 0.7, 0.2, 0.6, 0.4, 0.8, 0.0005])
    _, sc, _ = soft_nms(segs, scores, torch.zeros(10, dtype=torch.long), max_num=3)
    assert sc.tolist() == pytest.approx([0.9, 0.8, 0.7])
    _, sc, _ = soft_nms(segs, scores, torch.zeros(10, dtype=torch.long), max_num=0, min_score=1e-3)
    assert len(sc) == 9  # 0.0005 < min_score dropped, no cap otherwise
    assert torch.all(sc[:-1] >= sc[1:])
    # decay below min_score removes a candidate: 0.002 * e^-2 < 1e-3
    _, sc, _ = soft_nms(_t([[0, 1], [0, 1]]), torch.tensor([0.9, 0.002]), torch.tensor([0, 0]))
    assert sc.tolist() == pytest.approx([0.9])


def test_empty_and_bad_inputs():
    s, sc, lab = soft_nms(torch.zeros(0, 2), torch.zeros(0), torch.zeros(0, dtype=torch.long))
    assert s.shape == (0, 2) and sc.shape == (0,) and lab.dtype == torch.long
    with pytest.raises(ValueError, match="method 'soft'"):
        soft_nms(_t([[0, 1]]), torch.tensor([1.0]), torch.tensor([0]), method="soft")
    with pytest.raises(ValueError, match="segments"):
        soft_nms(torch.zeros(3), torch.zeros(3), torch.zeros(3, dtype=torch.long))


def _reference_soft_nms(segs, scores, labels, iou_thr, sigma, min_score, method):
    """Straightforward re-statement of the classic (C++) loop, for cross-checking."""
    rows = zip(segs.tolist(), scores.tolist(), labels.tolist())
    items = [[float(a), float(b), float(s), int(c)] for (a, b), s, c in rows]
    items = [it for it in items if it[2] >= min_score]
    kept = []
    while items:
        best = max(range(len(items)), key=lambda j: (items[j][2], -j))
        top = items.pop(best)
        kept.append(top)
        survivors = []
        for it in items:
            inter = max(0.0, min(it[1], top[1]) - max(it[0], top[0]))
            union = (it[1] - it[0]) + (top[1] - top[0]) - inter
            iou = inter / union if union > 0 else 0.0
            if it[3] != top[3]:
                iou = 0.0
            if method == "gaussian":
                w = math.exp(-iou * iou / sigma)
            elif method == "linear":
                w = 1 - iou if iou > iou_thr else 1.0
            else:
                w = 0.0 if iou > iou_thr else 1.0
            it[2] *= w
            if w > 0 and it[2] >= min_score:
                survivors.append(it)
        items = survivors
    return kept


@pytest.mark.parametrize("method", ["gaussian", "linear", "hard"])
def test_matches_reference_on_random_candidates(method):
    g = torch.Generator().manual_seed(7)
    n = 60
    start = torch.rand(n, generator=g) * 50
    segs = torch.stack([start, start + 1 + torch.rand(n, generator=g) * 10], 1)
    scores = torch.rand(n, generator=g)
    labels = torch.randint(0, 3, (n,), generator=g)
    s, sc, lab = soft_nms(segs, scores, labels, 0.3, 0.5, 1e-3, method, max_num=0)
    ref = sorted(_reference_soft_nms(segs, scores, labels, 0.3, 0.5, 1e-3, method), key=lambda r: -r[2])
    assert len(ref) == len(sc)
    assert sc.tolist() == pytest.approx([r[2] for r in ref], abs=1e-6)
    assert torch.allclose(s, torch.tensor([[r[0], r[1]] for r in ref]), atol=1e-5)
    assert lab.tolist() == [r[3] for r in ref]
    # capping keeps exactly the best max_num of the uncapped result
    _, sc10, _ = soft_nms(segs, scores, labels, 0.3, 0.5, 1e-3, method, max_num=10)
    assert sc10.tolist() == pytest.approx(sc[:10].tolist(), abs=1e-6)


def test_segment_voting():
    segs = _t([[0.0, 10.0], [1.0, 11.0], [30.0, 40.0]])
    scores = torch.tensor([0.9, 0.6, 0.5])
    iou = segment_iou(segs, segs)
    assert iou[0, 1] == pytest.approx(9 / 11)
    refined = seg_voting(segs[:1], segs, scores, iou_threshold=0.7)
    # ActionFormer weights each neighbour by score × IoU:
    # (0.9·1·[0, 10] + 0.6·(9/11)·[1, 11]) / (0.9 + 0.6·9/11) = [6/17, 10 + 6/17]
    # (score alone would give [0.4, 10.4])
    assert torch.allclose(refined, _t([[6 / 17, 10 + 6 / 17]]), atol=1e-5)
    s, _, _ = soft_nms(segs, scores, torch.tensor([0, 1, 0]), multiclass=False, voting_thresh=0.7)
    assert s[0].tolist() == pytest.approx([6 / 17, 10 + 6 / 17])
    s, _, _ = soft_nms(segs, scores, torch.tensor([0, 1, 0]), multiclass=True, voting_thresh=0.7)
    assert s[0].tolist() == [0.0, 10.0]  # ActionFormer: no voting with multiclass NMS


def test_segment_voting_in_chunks_equals_one_pass(monkeypatch):
    from losa.post import nms

    g = torch.Generator().manual_seed(3)
    start = torch.rand(300, generator=g) * 100
    segs = torch.stack([start, start + 1 + torch.rand(300, generator=g) * 20], 1)
    scores = torch.rand(300, generator=g)
    kept = segs[:150]
    chunked = seg_voting(kept, segs, scores, 0.5)                 # 64 + 64 + 22 rows
    monkeypatch.setattr(nms, "VOTE_ROWS", 10**6)
    one = seg_voting(kept, segs, scores, 0.5)
    assert chunked.shape == (150, 2) and torch.equal(chunked, one) and not torch.equal(one, kept)


# --------------------------------------------------------------------------- decoding
def _logit(p: float) -> float:
    return math.log(p / (1 - p))


def test_decode_hand_built_outputs():
    # two levels: L0 stride 1 (4 steps), L1 stride 2 (2 steps); K = 2; batch of 2
    points = [
        torch.tensor([[float(t), 0.0, 4.0, 1.0] for t in range(4)]),
        torch.tensor([[0.0, 4.0, 1e4, 2.0], [2.0, 4.0, 1e4, 2.0]]),
    ]
    cls = [torch.full((2, 4, 2), -20.0), torch.full((2, 2, 2), -20.0)]
    off = [torch.zeros(2, 4, 2), torch.zeros(2, 2, 2)]
    masks = [torch.ones(2, 4, dtype=torch.bool), torch.ones(2, 2, dtype=torch.bool)]
    cls[0][0, 1, 1] = _logit(0.9)  # video 0, L0 t=1, class 1
    off[0][0, 1] = torch.tensor([0.5, 2.0])  # -> [0.5, 3.0]
    cls[1][0, 1, 0] = _logit(0.6)  # video 0, L1 t=2, class 0
    off[1][0, 1] = torch.tensor([1.0, 1.5])  # -> [2 - 2, 2 + 3] = [0, 5]
    cls[0][0, 3, 0] = _logit(0.8)  # zero offsets -> zero duration -> dropped by duration_thresh
    cls[0][1, 2, 0] = _logit(0.7)  # video 1, but masked out
    masks[0][1, 2] = False
    res = decode_predictions(cls, off, masks, points, pre_nms_thresh=0.01)
    segs, scores, labels = res[0]
    order = scores.argsort(descending=True)
    assert scores[order].tolist() == pytest.approx([0.9, 0.6], abs=1e-5)
    assert labels[order].tolist() == [1, 0]
    assert torch.allclose(segs[order], _t([[0.5, 3.0], [0.0, 5.0]]))
    assert res[1][0].shape == (0, 2)
    # pre_nms_topk is applied per level
    res = decode_predictions(cls, off, masks, points, pre_nms_thresh=0.01, pre_nms_topk=1, duration_thresh=-1)
    assert sorted(res[0][1].tolist()) == pytest.approx([0.6, 0.9], abs=1e-5)
    # postprocess runs NMS on top (the two segments overlap but have different classes)
    out = postprocess(cls, off, masks, points, pre_nms_thresh=0.01)
    assert out[0][1].tolist() == pytest.approx([0.9, 0.6], abs=1e-5)
    out = postprocess(cls, off, masks, points, pre_nms_thresh=0.01, multiclass=False, method="hard")
    assert out[0][1].tolist() == pytest.approx([0.9], abs=1e-5)  # IoU 2.5/5 > 0.1
    out = postprocess(cls, off, masks, points, pre_nms_thresh=0.01, method="none", max_seg_num=1)
    assert out[0][1].tolist() == pytest.approx([0.9], abs=1e-5)
