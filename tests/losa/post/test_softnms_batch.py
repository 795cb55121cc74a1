"""Items run together (losa/post/softnms.py: one set of rounds for all sparse items of a batch) give
bit-identical results to each item alone, through every path: pooled, regrown pool, a dense pool
finished greedily, a slow round finished greedily, the stop at max_num, ties, zero weights."""

from __future__ import annotations

import pytest
import torch

from losa.post import softnms
from losa.post.softnms import soft_nms_batch, soft_nms_greedy


def _spread(n: int, seed: int, classes: int, span: float = 400.0):
    g = torch.Generator().manual_seed(seed)
    centre = torch.rand(n, generator=g) * span
    length = torch.rand(n, generator=g) ** 2 * 60 + 0.5
    segs = torch.stack([centre - length / 2, centre + length / 2], 1)
    return segs, torch.rand(n, generator=g) ** 3, torch.randint(0, classes, (n,), generator=g)


def _cluster_item(seed: int):
    """80 high-scoring, almost identical segments (a dense pool of the best 80 = 4 x max_num 20) over
    920 low-scoring disjoint ones (a sparse whole): the pool's rounds go greedy, too few of its picks
    stay above its threshold, the pool grows, and the cluster's chain makes a slow round."""
    g = torch.Generator().manual_seed(seed)
    jitter = torch.rand(80, 2, generator=g) * 0.5
    cluster = torch.stack([100.0 + jitter[:, 0], 110.0 + jitter[:, 1]], 1)
    starts = 1000.0 + 3.0 * torch.arange(920, dtype=torch.float32)
    spread = torch.stack([starts, starts + 1.0], 1)
    scores = torch.cat([0.9 + 0.09 * torch.rand(80, generator=g), 0.002 + 0.008 * torch.rand(920, generator=g)])
    return torch.cat([cluster, spread]), scores, torch.zeros(1000, dtype=torch.long)


def _items(multiclass: bool):
    items = [_spread(400, 1, 5), _cluster_item(2), _spread(60, 3, 2), _spread(500, 4, 3)]
    items[2][1][::7] = items[2][1][0]                                 # tied scores
    items.insert(2, (torch.zeros(0, 2), torch.zeros(0), torch.zeros(0, dtype=torch.long)))
    items.append(_spread(300, 5, 1, span=30.0))                       # dense: the batched greedy loop
    if not multiclass:
        items = [(s, sc, torch.zeros_like(g)) for s, sc, g in items]
    return items


@pytest.mark.parametrize("method,min_score", [("gaussian", 1e-3), ("linear", 1e-3), ("hard", 0.0)])
@pytest.mark.parametrize("multiclass", [True, False])
def test_items_together_equal_each_alone_bit_for_bit(method: str, min_score: float, multiclass: bool,
                                                     monkeypatch) -> None:
    calls: dict[str, list] = {"rounds": [], "greedy": [], "pools": []}
    rounds, greedy, pooled = softnms._rounds, softnms._greedy, softnms._pooled_rounds
    monkeypatch.setattr(softnms, "_rounds", lambda items, **k: calls["rounds"].append(len(items)) or rounds(items, **k))
    monkeypatch.setattr(softnms, "_greedy", lambda *a, **k: calls["greedy"].append(1) or greedy(*a, **k))
    monkeypatch.setattr(softnms, "_pooled_rounds",
                        lambda items, *, pool, **k: calls["pools"].append(pool) or pooled(items, pool=pool, **k))
    items = _items(multiclass)
    kw = {"method": method, "iou_threshold": 0.1, "sigma": 0.5, "min_score": min_score}
    for max_num in (20, 0):
        for seen in calls.values():
            seen.clear()
        together = soft_nms_batch(items, max_num=max_num, **kw)
        if multiclass:
            assert calls["rounds"][0] >= 4                 # the sparse items share one set of rounds
            if max_num:
                assert 4 * 4 * max_num in calls["pools"]   # the cluster item's pool grew
        if method == "gaussian" and multiclass and max_num:
            assert len(calls["greedy"]) >= 2               # its dense pool, then its slow round
        for (gi, gs), (segs, scores, groups) in zip(together, items):
            ai, as_ = soft_nms_batch([(segs, scores, groups)], max_num=max_num, **kw)[0]
            assert torch.equal(gi, ai) and torch.equal(gs, as_)
            _, ws = soft_nms_greedy(segs, scores, groups, max_num=max_num, **kw)
            assert gs.shape == ws.shape
            torch.testing.assert_close(gs, ws, rtol=0, atol=1e-6)


def test_items_together_stop_where_each_would_alone() -> None:
    """Per-item caps: an item with 300 disjoint candidates stops after its first round (max_num of
    its picks already beat what remains), while another item goes on — both as alone."""
    starts = 5.0 * torch.arange(300, dtype=torch.float32)
    disjoint = (torch.stack([starts, starts + 1.0], 1), torch.linspace(0.9, 0.01, 300),
                torch.zeros(300, dtype=torch.long))
    chain = _spread(200, 7, 1, span=200.0)
    kw = {"method": "gaussian", "iou_threshold": 0.1, "sigma": 0.5, "min_score": 1e-3, "max_num": 50}
    together = soft_nms_batch([disjoint, chain], **kw)
    for got, item in zip(together, (disjoint, chain)):
        alone = soft_nms_batch([item], **kw)[0]
        assert torch.equal(got[0], alone[0]) and torch.equal(got[1], alone[1])
    assert together[0][0].tolist() == list(range(50))
