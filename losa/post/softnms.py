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
Dense items run the batched greedy loop (:func:`_greedy_side_by_side`): the same float32 operations
per pick, several items per Python iteration, on a shrinking pool of candidates.
"""

from __future__ import annotations

import torch
from torch import Tensor

__all__ = ["pair_weights", "soft_nms_rounds", "soft_nms_batch", "soft_nms_greedy"]

#: A round selecting fewer candidates than this hands the rest to the greedy loop.
SLOW_ROUND = 8
#: Conflicting pairs per candidate above which the greedy loop is used from the start.
DENSE_PAIRS = 64
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
        # dense: the greedy loop is cheaper (the batched one, with the same float32 operations)
        return _greedy_side_by_side([(segs, scores, groups)], max_num=max_num, **kw)[0]
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
    if dense:
        for k, res in zip(dense, _greedy_side_by_side([items[k] for k in dense], max_num=max_num, **kw)):
            out[k] = res
    return out  # type: ignore[return-value]


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
