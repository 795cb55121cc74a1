"""Soft-NMS selection cores: a vectorised exact one (default) and the greedy reference loop.

Both return ``(kept indices [n], kept scores [n])`` in selection order for candidates ``segs [N, 2]``
(float32, CPU), ``scores [N]`` and ``groups [N]`` (candidates interact only inside a group: the label
for per-class NMS, one group for class-agnostic NMS).  The decay weight of a pair is computed with the
same float32 expressions in both (:func:`pair_weights`).

**Why rounds are exact.**  Greedy Soft-NMS takes the best remaining candidate and decays the others
by ``w(IoU)``.  Call ``i`` and ``j`` *in conflict* when ``w_ij < 1`` (same group, overlapping for the
gaussian, IoU above the threshold for linear / hard).  A remaining candidate that beats every remaining
candidate it conflicts with (higher score, ties to the lower index) is taken by the greedy loop
before any of them and with its current score: only a conflicting candidate's selection could lower
it, and their scores only fall.  So every such local maximum is selected at once, and every
remaining neighbour is decayed by the product of the weights of the selected neighbours (the same
factors greedy applies, multiplied in another order: equal up to float32 rounding, ~1e-7 relative).
Rounds repeat on the pairs still alive; their number is the longest chain of ever-lower conflicting
candidates, typically tens, against one Python iteration per kept segment for the greedy loop.
The greedy result is the rounds' selections sorted by (score descending, selection index), cut at
``max_num``; since later selections never score above the best remaining candidate, rounds stop as
soon as ``max_num`` selections score above it.  Where the conflict graph is dense (more than
``DENSE_PAIRS`` pairs per candidate) or a round stalls, the greedy loop takes over (from the current
state, which is exact: selections so far were greedy picks, and non-conflicting picks commute).
"""

from __future__ import annotations

import torch
from torch import Tensor

__all__ = ["pair_weights", "soft_nms_rounds", "soft_nms_batch", "soft_nms_greedy"]

#: A round selecting fewer candidates than this hands the rest to the greedy loop.
SLOW_ROUND = 8
#: Conflicting pairs per candidate above which the greedy loop is used from the start.
DENSE_PAIRS = 64


def pair_weights(iou: Tensor, method: str, iou_threshold: float, sigma: float) -> Tensor:
    """Decay weight of each IoU (float32), as the greedy loop applies it."""
    if method == "gaussian":
        return torch.exp(-(iou * iou) / sigma)
    if method == "linear":
        return torch.where(iou > iou_threshold, 1.0 - iou, torch.ones_like(iou))
    return (iou <= iou_threshold).float()


def _pair_iou(starts: Tensor, ends: Tensor, lens: Tensor, a: Tensor, b: Tensor) -> Tensor:
    inter = (torch.minimum(ends[b], ends[a]) - torch.maximum(starts[b], starts[a])).clamp(min=0)
    return inter / (lens[b] + lens[a] - inter).clamp(min=1e-8)


def _conflict_pairs(segs: Tensor, groups: Tensor, max_pairs: int | None = None, build: bool = True
                    ) -> tuple[Tensor, Tensor] | None:
    """All pairs ``(a, b)``, ``a != b``, of the same group whose segments overlap (both directions);
    None when there are more than ``max_pairs`` (counted before any pair is built; ``build=False``
    only counts and returns two empty tensors when there are not)."""
    starts, ends = segs[:, 0].double(), segs[:, 1].double()
    lo = float(min(starts.min(), ends.min()))
    span = float(max(starts.max(), ends.max())) - lo
    offset = groups.double() * (2.0 * span + 1.0)              # groups never overlap on this axis
    key_s, key_e = starts - lo + offset, ends - lo + offset
    order = torch.argsort(key_s, stable=True)
    sorted_s = key_s[order]
    # sorted position p overlaps the later positions p+1 .. stop-1 (start < its end)
    stop = torch.searchsorted(sorted_s, key_e[order], side="left")
    pos = torch.arange(order.numel())
    count = (stop - pos - 1).clamp(min=0)
    if max_pairs is not None and 2 * int(count.sum()) > max_pairs:
        return None
    first = torch.repeat_interleave(pos, count) if build else torch.zeros(0, dtype=torch.long)
    if first.numel() == 0:
        empty = torch.zeros(0, dtype=torch.long)
        return empty, empty
    base = torch.repeat_interleave(torch.cumsum(count, 0) - count, count)
    second = first + 1 + (torch.arange(first.numel()) - base)
    a, b = order[first], order[second]
    return torch.cat([a, b]), torch.cat([b, a])


def soft_nms_rounds(segs: Tensor, scores: Tensor, groups: Tensor, *, method: str, iou_threshold: float,
                    sigma: float, min_score: float, max_num: int) -> tuple[Tensor, Tensor]:
    """Vectorised exact Soft-NMS (see the module docstring); ``max_num <= 0``: no cap.

    With a cap, only the best candidates by input score take part at first: a candidate of input
    score below ``tau`` is selected (if ever) with a score below ``tau`` and decays only candidates
    selected after it, so every selection scoring ``>= tau`` is the same with or without the
    candidates below ``tau``.  When ``max_num`` selections reach ``tau`` they are the result;
    otherwise the pool grows (x4) until it holds every candidate.
    """
    kw = dict(method=method, iou_threshold=iou_threshold, sigma=sigma, min_score=min_score)
    n = segs.shape[0]
    if _conflict_pairs(segs, groups, max_pairs=DENSE_PAIRS * n, build=False) is None:
        return soft_nms_greedy(segs, scores, groups, max_num=max_num, **kw)   # dense: greedy is cheaper
    pool = 4 * max_num
    if max_num <= 0 or n <= pool:
        return _rounds(segs, scores, groups, max_num=max_num, **kw)
    ranked = torch.sort(scores, descending=True, stable=True).values
    while pool < n:
        tau = ranked[pool - 1]
        sub = (scores >= tau).nonzero(as_tuple=True)[0]
        idx, sc = _rounds(segs[sub], scores[sub], groups[sub], max_num=max_num, **kw)
        if int((sc >= tau).sum()) >= max_num:
            return sub[idx], sc
        pool *= 4
    return _rounds(segs, scores, groups, max_num=max_num, **kw)


def _rounds(segs: Tensor, scores: Tensor, groups: Tensor, *, method: str, iou_threshold: float,
            sigma: float, min_score: float, max_num: int) -> tuple[Tensor, Tensor]:
    """The rounds over all of ``segs`` (see the module docstring)."""
    n = segs.shape[0]
    work = scores.clone()
    starts, ends = segs[:, 0], segs[:, 1]
    lens = (ends - starts).clamp(min=0)
    limit = n if max_num <= 0 else min(max_num, n)
    pairs = _conflict_pairs(segs, groups, max_pairs=DENSE_PAIRS * n)
    if pairs is None:
        # a dense conflict graph: every round would touch many pairs per pick; greedy is cheaper
        return _greedy(starts, ends, lens, work, groups, method=method, iou_threshold=iou_threshold,
                       sigma=sigma, min_score=min_score, limit=limit, done=torch.zeros(0))
    src, dst = pairs
    w = pair_weights(_pair_iou(starts, ends, lens, src, dst), method, iou_threshold, sigma)
    keep = w < 1.0
    src, dst, w = src[keep], dst[keep], w[keep]
    index = torch.arange(n)
    alive = work >= min_score
    limit = n if max_num <= 0 else min(max_num, n)
    sel_idx: list[Tensor] = []
    sel_score: list[Tensor] = []
    taken = 0
    while bool(alive.any()):
        live = alive[src] & alive[dst]
        src, dst, w = src[live], dst[live], w[live]
        ws, wd = work[src], work[dst]
        beaten = (wd > ws) | ((wd == ws) & (dst < src))         # dst beats src: src is no local max
        loser = torch.zeros(n, dtype=torch.bool)
        loser[src[beaten]] = True
        chosen = alive & ~loser
        picked = index[chosen]
        sel_idx.append(picked)
        sel_score.append(work[picked])
        taken += picked.numel()
        alive &= ~chosen
        hit = chosen[src] & alive[dst]                          # decay the neighbours of the chosen
        if bool(hit.any()):
            d, wh = dst[hit], w[hit]
            factor = torch.ones(n).scatter_reduce_(0, d, wh, reduce="prod")
            work = work * factor
            zero = torch.zeros(n, dtype=torch.bool)
            zero[d[wh <= 0]] = True
            alive &= (work >= min_score) & ~zero
        if taken >= limit and bool(alive.any()):
            best = work[alive].max()
            if int((torch.cat(sel_score) > best).sum()) >= limit:
                break
        n_alive = int(alive.sum())
        slow = picked.numel() < SLOW_ROUND or src.numel() > picked.numel() * (10 * n_alive + 65536)
        if slow and n_alive:
            # dense conflicts (chains of overlapping candidates): a round costs more per pick than a
            # greedy step, so finish greedily on what is left — exact, as the candidates already
            # selected were greedy picks whose decays are applied, and non-conflicting picks commute
            rest = alive.nonzero(as_tuple=True)[0]
            done = torch.cat(sel_score)
            gi, gs = _greedy(starts[rest], ends[rest], lens[rest], work[rest], groups[rest],
                             method=method, iou_threshold=iou_threshold, sigma=sigma,
                             min_score=min_score, limit=limit, done=done)
            sel_idx.append(rest[gi])
            sel_score.append(gs)
            break
    if not sel_idx:
        return torch.zeros(0, dtype=torch.long), torch.zeros(0)
    idx, sc = torch.cat(sel_idx), torch.cat(sel_score)
    # greedy order: score descending, ties to the lower index (what argmax picks first)
    order = torch.argsort(idx, stable=True)
    order = order[torch.argsort(sc[order], descending=True, stable=True)][:limit]
    return idx[order], sc[order]


def soft_nms_batch(items: list[tuple[Tensor, Tensor, Tensor]], *, method: str, iou_threshold: float,
                   sigma: float, min_score: float, max_num: int) -> list[tuple[Tensor, Tensor]]:
    """:func:`soft_nms_rounds` of every ``(segs, scores, groups)``, except that the items with
    dense conflict graphs run their greedy loops side by side (one Python iteration per pick for all
    of them; elementwise the same float32 operations, so the same result)."""
    kw = dict(method=method, iou_threshold=iou_threshold, sigma=sigma, min_score=min_score)
    out: list[tuple[Tensor, Tensor] | None] = [None] * len(items)
    dense = []
    for k, (segs, scores, groups) in enumerate(items):
        n = segs.shape[0]
        if _conflict_pairs(segs, groups, max_pairs=DENSE_PAIRS * n, build=False) is None:
            dense.append(k)
        else:
            out[k] = soft_nms_rounds(segs, scores, groups, max_num=max_num, **kw)
    if len(dense) == 1:
        k = dense[0]
        out[k] = soft_nms_greedy(*items[k], max_num=max_num, **kw)
    elif dense:
        for k, res in zip(dense, _greedy_side_by_side([items[k] for k in dense], max_num=max_num, **kw)):
            out[k] = res
    return out  # type: ignore[return-value]


def _greedy_side_by_side(items: list[tuple[Tensor, Tensor, Tensor]], *, method: str, iou_threshold: float,
                         sigma: float, min_score: float, max_num: int) -> list[tuple[Tensor, Tensor]]:
    """The greedy loop of several items at once, rows padded with dead candidates."""
    v = len(items)
    sizes = [s.shape[0] for s, _, _ in items]
    n = max(sizes)
    starts, ends = torch.zeros(v, n), torch.zeros(v, n)
    work = torch.zeros(v, n)
    groups = torch.full((v, n), -1, dtype=torch.long)
    valid = torch.zeros(v, n, dtype=torch.bool)
    for r, (segs, scores, g) in enumerate(items):
        k = sizes[r]
        starts[r, :k], ends[r, :k], work[r, :k], groups[r, :k] = segs[:, 0], segs[:, 1], scores, g
        valid[r, :k] = True
    lens = (ends - starts).clamp(min=0)
    alive = valid & (work >= min_score)
    limits = torch.tensor([k if max_num <= 0 else min(max_num, k) for k in sizes])
    count = torch.zeros(v, dtype=torch.long)
    rows = torch.arange(v)
    neg_inf = torch.tensor(float("-inf"))
    picks, vals = [], []
    active = alive.any(dim=1) & (limits > 0)
    while bool(active.any()):
        i = torch.argmax(torch.where(alive, work, neg_inf), dim=1)
        ok = active & alive[rows, i]
        picks.append(torch.where(ok, i, -1))
        vals.append(work[rows, i])
        count += ok.long()
        alive[rows[ok], i[ok]] = False
        si, ei, li, gi = (z[rows, i][:, None] for z in (starts, ends, lens, groups))
        inter = (torch.minimum(ends, ei) - torch.maximum(starts, si)).clamp(min=0)
        iou = inter / (lens + li - inter).clamp(min=1e-8)
        iou = iou * (groups == gi).float()
        weight = torch.where(ok[:, None], pair_weights(iou, method, iou_threshold, sigma), 1.0)
        work = work * weight
        alive &= (work >= min_score) & (weight > 0)
        active = ok & (count < limits) & alive.any(dim=1)
    if not picks:
        return [(torch.zeros(0, dtype=torch.long), torch.zeros(0)) for _ in items]
    p, s = torch.stack(picks, 1), torch.stack(vals, 1)
    return [(p[r][p[r] >= 0], s[r][p[r] >= 0]) for r in range(v)]


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
