"""Greedy Soft-NMS loops: the reference one (one pick per Python iteration) and the batched one.

Same conventions as :mod:`losa.post.softnms` (which uses both): ``(kept indices [n], kept scores [n])``
in selection order for candidates ``segs [N, 2]`` (float32, CPU), ``scores [N]`` and ``groups [N]``.
:func:`_greedy_side_by_side` runs the greedy loop of several items at once, elementwise with the same
float32 operations as :func:`soft_nms_greedy`, so with bit-identical picks and scores.
"""

from __future__ import annotations

import torch
from torch import Tensor

__all__ = ["pair_weights", "soft_nms_greedy"]

#: Picks between two compactions of the batched greedy loop's live candidates.
COMPACT_EVERY = 16
#: With a cap, the batched greedy loop starts with the best ``POOL * max_num`` candidates of a row.
POOL = 6


def pair_weights(iou: Tensor, method: str, iou_threshold: float, sigma: float) -> Tensor:
    """Decay weight of each IoU (float32), as the greedy loop applies it."""
    if method == "gaussian":
        return torch.exp(-(iou * iou) / sigma)
    if method == "linear":
        return torch.where(iou > iou_threshold, 1.0 - iou, torch.ones_like(iou))
    return (iou <= iou_threshold).float()


def _greedy_side_by_side(items: list[tuple[Tensor, Tensor, Tensor]], *, method: str, iou_threshold: float,
                         sigma: float, min_score: float, max_num: int) -> list[tuple[Tensor, Tensor]]:
    """The greedy loop of several items at once: one row per item of a padded ``[V, W]`` score
    tensor, so that each Python iteration makes one pick in every row.

    Per pick it applies the greedy loop's float32 expressions to every live candidate, so picks and
    scores are bit-identical; it saves bookkeeping and work.  A dead candidate's score is ``-inf``
    (one ``max`` gives the pick and tells an exhausted row); the pick's start / end / length / index
    come from one gather; the group mask is skipped where every row is one group; every
    ``COMPACT_EVERY`` picks each row's live candidates are packed to the front (stable: ties still
    go to the lower index).  With a cap, a row starts with its best ``POOL·max_num`` candidates by
    input score (those ``>= tau``): greedy picks nothing below ``tau`` before the best remaining
    score falls below ``tau``, so up to then the others are not needed; when it does (rarely), they
    are admitted with the decays of the picks so far applied in pick order (the same products).
    """
    v = len(items)
    sizes = [s.shape[0] for s, _, _ in items]
    n = max(sizes)
    one_group = all(g.numel() == 0 or bool((g == g[0]).all()) for _, _, g in items)
    chans = 4 if one_group else 5
    full = torch.zeros(v, chans, n)                  # start, end, length, index[, group], input order
    first = torch.full((v, n), float("-inf"))        # input scores, -inf: below min_score / padding
    tau = torch.full((v,), float("-inf"))
    for r, (segs, scores, g) in enumerate(items):
        k = sizes[r]
        full[r, 0, :k], full[r, 1, :k] = segs[:, 0], segs[:, 1]
        full[r, 3, :k] = torch.arange(k, dtype=torch.float32)    # exact below 2**24
        if not one_group:
            full[r, 4, :k] = g.float()
        first[r, :k] = torch.where(scores >= min_score, scores, first[r, :k])
        if 0 < POOL * max_num < k:
            tau[r] = torch.sort(first[r, :k], descending=True).values[POOL * max_num - 1]
    if n >= 2 ** 24:
        raise ValueError("too many candidates for the batched greedy loop")
    full[:, 2] = (full[:, 1] - full[:, 0]).clamp(min=0)
    neg_inf = torch.tensor(float("-inf"))
    work, feats = _pack(torch.where(first >= tau[:, None], first, neg_inf), full)
    pooled = bool((tau > neg_inf).any())
    steps = n if max_num <= 0 else min(max_num, n)
    picks, vals, history = [], [], []
    for step in range(steps):
        if step % COMPACT_EVERY == 0 and step:
            width = int((work > neg_inf).sum(dim=1).max())
            if width == 0 and not pooled:
                break                                   # every row exhausted
            if width <= (3 * work.shape[1]) // 4:
                work, feats = _pack(work, feats)
        val, i = work.max(dim=1)
        if pooled and bool((val < tau).any()):        # admit the rest of those rows, decayed
            work = _admit(work, feats, full, first, tau, history, one_group, method=method,
                          iou_threshold=iou_threshold, sigma=sigma, min_score=min_score)
            work, feats = _pack(work, full)
            pooled = bool((tau > neg_inf).any())
            val, i = work.max(dim=1)
        pick = feats.gather(2, i.view(v, 1, 1).expand(v, chans, 1))
        vals.append(val)
        picks.append(pick[:, 3, 0])
        if pooled:
            history.append(pick)
        starts, ends, lens = feats[:, 0], feats[:, 1], feats[:, 2]
        inter = torch.minimum(ends, pick[:, 1]).sub_(torch.maximum(starts, pick[:, 0])).clamp_(min=0)
        iou = inter / (lens + pick[:, 2]).sub_(inter).clamp_(min=1e-8)
        if not one_group:
            iou = iou * (feats[:, 4] == pick[:, 4]).float()
        weight = pair_weights(iou, method, iou_threshold, sigma)
        work = work.mul_(weight)
        work.scatter_(1, i[:, None], neg_inf.expand(v, 1))
        keep = work >= min_score
        if min_score <= 0:
            keep &= weight > 0
        work = torch.where(keep, work, neg_inf)     # also turns -inf * 0 (nan) into -inf
    if not picks:
        return [(torch.zeros(0, dtype=torch.long), torch.zeros(0)) for _ in items]
    p, s = torch.stack(picks, 1).long(), torch.stack(vals, 1)
    ok = s > neg_inf
    return [(p[r][ok[r]], s[r][ok[r]]) for r in range(v)]


def _pack(work: Tensor, feats: Tensor) -> tuple[Tensor, Tensor]:
    """Each row's live candidates (score > -inf) moved to the front in their order; width: the most."""
    live = work > float("-inf")
    width = max(int(live.sum(dim=1).max()), 1)
    order = torch.argsort((~live).to(torch.uint8), dim=1, stable=True)[:, :width]
    return work.gather(1, order), feats.gather(2, order[:, None, :].expand(-1, feats.shape[1], width))


def _admit(work: Tensor, feats: Tensor, full: Tensor, first: Tensor, tau: Tensor, history: list[Tensor],
           one_group: bool, *, method: str, iou_threshold: float, sigma: float, min_score: float) -> Tensor:
    """Scores in input order (``[V, N]``) of the live candidates, plus, in the rows whose best
    score fell below ``tau``, the candidates left out so far, decayed by every pick of the row so
    far in pick order (the greedy loop's products); those rows' ``tau`` becomes ``-inf``."""
    neg_inf = float("-inf")
    out = torch.full_like(first, neg_inf)
    out.scatter_reduce_(1, feats[:, 3].long(), work, reduce="amax")   # padding is -inf: no harm
    rows = (work.max(dim=1).values < tau).nonzero(as_tuple=True)[0]
    rest = first[rows]
    left = (rest < tau[rows, None]) & (rest > neg_inf)
    cand = full[rows]
    alive = torch.ones_like(rest, dtype=torch.bool)
    for pick in history:
        pk = pick[rows]
        inter = (torch.minimum(cand[:, 1], pk[:, 1]) - torch.maximum(cand[:, 0], pk[:, 0])).clamp(min=0)
        iou = inter / (cand[:, 2] + pk[:, 2] - inter).clamp(min=1e-8)
        if not one_group:
            iou = iou * (cand[:, 4] == pk[:, 4]).float()
        weight = pair_weights(iou, method, iou_threshold, sigma)
        rest = rest * weight
        alive &= (rest >= min_score) & (weight > 0)
    out[rows] = torch.where(left & alive, rest, out[rows])
    tau[rows] = neg_inf
    return out


def soft_nms_greedy(segs: Tensor, scores: Tensor, groups: Tensor, *, method: str, iou_threshold: float,
                    sigma: float, min_score: float, max_num: int) -> tuple[Tensor, Tensor]:
    """The reference greedy loop: one selection per Python iteration, O(max_num · N)."""
    n = segs.shape[0]
    starts, ends = segs[:, 0], segs[:, 1]
    lens = (ends - starts).clamp(min=0)
    limit = n if max_num <= 0 else min(max_num, n)
    return _greedy(starts, ends, lens, scores.clone(), groups, method=method, iou_threshold=iou_threshold,
                   sigma=sigma, min_score=min_score, limit=limit, done=torch.zeros(0))


def _greedy(starts: Tensor, ends: Tensor, lens: Tensor, work: Tensor, groups: Tensor, *, method: str,
            iou_threshold: float, sigma: float, min_score: float, limit: int, done: Tensor
            ) -> tuple[Tensor, Tensor]:
    """Greedy selections from the current scores ``work``; ``done``: scores already selected
    elsewhere — the loop stops once ``limit`` selections (those and its own) score above the
    current pick, as every later pick scores lower still."""
    alive = work >= min_score
    neg_inf = torch.tensor(float("-inf"))
    keep_idx: list[int] = []
    keep_score: list[float] = []
    ranked = torch.sort(done, descending=True).values
    while len(keep_idx) < limit:
        i = int(torch.argmax(torch.where(alive, work, neg_inf)))
        if not alive[i]:
            break
        s = float(work[i])
        if len(keep_idx) + int((ranked > s).sum()) >= limit:
            break
        keep_idx.append(i)
        keep_score.append(s)
        alive[i] = False
        inter = (torch.minimum(ends, ends[i]) - torch.maximum(starts, starts[i])).clamp(min=0)
        iou = inter / (lens + lens[i] - inter).clamp(min=1e-8)
        iou = iou * (groups == groups[i]).float()
        weight = pair_weights(iou, method, iou_threshold, sigma)
        work = work * weight
        alive &= (work >= min_score) & (weight > 0)
    return torch.tensor(keep_idx, dtype=torch.long), torch.tensor(keep_score, dtype=torch.float32)
