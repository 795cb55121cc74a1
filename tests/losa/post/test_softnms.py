"""Vectorised Soft-NMS rounds (losa/post/softnms.py) equal the greedy reference loop."""

from __future__ import annotations

import pytest
import torch

from losa.post.nms import soft_nms
from losa.post.softnms import soft_nms_greedy, soft_nms_rounds


def _candidates(n: int, seed: int, classes: int = 5, span: float = 400.0):
    g = torch.Generator().manual_seed(seed)
    centre = torch.rand(n, generator=g) * span
    length = torch.rand(n, generator=g) ** 2 * 60 + 0.5
    segs = torch.stack([centre - length / 2, centre + length / 2], 1)
    return segs, torch.rand(n, generator=g) ** 3, torch.randint(0, classes, (n,), generator=g)


@pytest.mark.parametrize("method", ["gaussian", "linear", "hard"])
@pytest.mark.parametrize("multiclass", [True, False])
@pytest.mark.parametrize("max_num", [200, 0, 7])
@pytest.mark.parametrize("dense", [10**9, 4], ids=["rounds", "dense-greedy"])
def test_rounds_equal_greedy(method: str, multiclass: bool, max_num: int, dense: int, monkeypatch) -> None:
    import losa.post.softnms as softnms

    monkeypatch.setattr(softnms, "DENSE_PAIRS", dense)      # force each path of the vectorised core
    for seed in range(2):
        segs, scores, labels = _candidates(100 + 80 * seed, seed)
        kw = dict(method=method, multiclass=multiclass, max_num=max_num, voting_thresh=0.7)
        want = soft_nms(segs, scores, labels, algorithm="greedy", **kw)
        got = soft_nms(segs, scores, labels, **kw)
        assert got[0].shape == want[0].shape
        assert torch.equal(got[2], want[2])
        torch.testing.assert_close(got[1], want[1], rtol=0, atol=1e-6)
        torch.testing.assert_close(got[0], want[0], rtol=0, atol=1e-5)


def test_pool_pruning_is_exact_and_ties_go_to_the_lower_index() -> None:
    segs, scores, labels = _candidates(2000, 9, classes=1)
    groups = torch.zeros(2000, dtype=torch.long)
    kw = dict(method="gaussian", iou_threshold=0.1, sigma=0.5, min_score=1e-3, max_num=20)
    gi, gs = soft_nms_greedy(segs, scores, groups, **kw)          # pool 80 of 2000 candidates
    ri, rs = soft_nms_rounds(segs, scores, groups, **kw)
    assert torch.equal(ri, gi)
    torch.testing.assert_close(rs, gs, rtol=0, atol=1e-6)
    # identical segments and scores: greedy keeps index 0 first, then the decayed index 1
    two = torch.tensor([[0.0, 1.0], [0.0, 1.0]])
    idx, sc = soft_nms_rounds(two, torch.tensor([0.5, 0.5]), torch.zeros(2, dtype=torch.long), **kw)
    assert idx.tolist() == [0, 1] and sc[0] == 0.5 and sc[1] < 0.5


def test_unknown_algorithm() -> None:
    segs, scores, labels = _candidates(5, 0)
    with pytest.raises(ValueError, match="unknown soft-NMS algorithm 'fast'"):
        soft_nms(segs, scores, labels, algorithm="fast")


@pytest.mark.parametrize("multiclass", [True, False])
def test_videos_together_equal_each_alone(multiclass: bool, monkeypatch) -> None:
    """soft_nms_videos (what postprocess runs per batch) = soft_nms of each video, also when the
    dense videos share one greedy loop."""
    import losa.post.softnms as softnms
    from losa.post.nms import soft_nms_videos

    videos = [_candidates(n, seed, classes=3) for seed, n in enumerate((90, 0, 150, 40))]
    videos[1] = (torch.zeros(0, 2), torch.zeros(0), torch.zeros(0, dtype=torch.long))
    kw = dict(multiclass=multiclass, max_num=30, voting_thresh=0.7)
    for dense in (10**9, 0):
        monkeypatch.setattr(softnms, "DENSE_PAIRS", dense)
        together = soft_nms_videos(videos, **kw)
        for got, (s, sc, lab) in zip(together, videos):
            want = soft_nms(s, sc, lab, algorithm="greedy", **kw)
            assert torch.equal(got[2], want[2]) and got[0].shape == want[0].shape
            if dense == 0:      # the shared greedy loop: the same float32 operations
                assert torch.equal(got[1], want[1]) and torch.equal(got[0], want[0])
            torch.testing.assert_close(got[1], want[1], rtol=0, atol=1e-6)


@pytest.mark.parametrize("method,min_score", [("gaussian", 1e-3), ("linear", 1e-3), ("hard", 0.0)])
@pytest.mark.parametrize("multiclass", [True, False])
def test_batched_greedy_loop_is_bit_identical(method: str, min_score: float, multiclass: bool,
                                              monkeypatch) -> None:
    """The batched greedy loop (dense videos): pooled candidates, their admission with the decays so
    far, compaction and tied scores give exactly the reference loop's picks and float32 scores."""
    from losa.post import softnms_greedy as softnms

    admitted = []
    admit = softnms._admit
    monkeypatch.setattr(softnms, "_admit", lambda *a, **k: admitted.append(1) or admit(*a, **k))
    monkeypatch.setattr(softnms, "POOL", 1)                 # small pools: admission happens
    items = []
    for seed, n in enumerate((300, 120, 260)):
        segs, scores, labels = _candidates(n, seed + 20, classes=3, span=60.0)
        scores[::7] = scores[0]                             # ties (broken to the lower index)
        groups = labels.long() if multiclass else torch.zeros(n, dtype=torch.long)
        items.append((segs, scores, groups))
    kw = {"method": method, "iou_threshold": 0.3, "sigma": 0.5, "min_score": min_score}
    for max_num in (40, 0):
        got = softnms._greedy_side_by_side(items, max_num=max_num, **kw)
        for (gi, gs), (segs, scores, groups) in zip(got, items):
            wi, ws = soft_nms_greedy(segs, scores, groups, max_num=max_num, **kw)
            assert torch.equal(gi, wi) and torch.equal(gs, ws)
    assert admitted                                         # the admission path ran


def test_batched_greedy_loop_admits_when_the_pool_runs_out(monkeypatch) -> None:
    """The pool (top 40 of 100) is used up by exactly 16 picks — the step of a compaction — while
    60 lower candidates remain outside it: they are admitted, not dropped."""
    from losa.post import softnms_greedy as softnms

    monkeypatch.setattr(softnms, "POOL", 1)
    top = torch.arange(40) % 16                             # 16 clusters of identical segments
    starts = torch.cat([10.0 * top, 1000.0 + 10.0 * torch.arange(60)])
    segs = torch.stack([starts, starts + 1.0], 1)
    scores = torch.cat([0.9 - 0.001 * torch.arange(40), 0.5 - 0.001 * torch.arange(60)])
    groups = torch.zeros(100, dtype=torch.long)
    kw = {"method": "hard", "iou_threshold": 0.5, "sigma": 0.5, "min_score": 1e-3, "max_num": 40}
    (gi, gs), = softnms._greedy_side_by_side([(segs, scores, groups)], **kw)
    wi, ws = soft_nms_greedy(segs, scores, groups, **kw)
    assert wi.numel() == 40 and torch.equal(gi, wi) and torch.equal(gs, ws)
