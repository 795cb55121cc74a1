"""Soft-NMS selection cores: a vectorised exact one (default) and the greedy reference loop
(:mod:`losa.post.softnms_greedy`, with the batched greedy loop of dense items).

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

**Items together.**  The other items of a batch (the videos of an inference batch) run their rounds
in the same Python iterations: their candidates are joined end to end with each item's groups moved
to a range of their own, so no pair crosses two items and a round of the joined candidates is a
round of every item alone — the same picks and the same decay factors, multiplied in the same order
(bit-identical results); each item stops, or hands its rest to the greedy loop, where it would alone.
Per-class NMS spends most of its time in per-operation overhead on a few thousand pairs, so sharing
the iterations (and using ``index_select`` rather than advanced indexing, see :func:`_take`) is what
makes it cheap.
"""

from __future__ import annotations

import torch
from torch import Tensor

from losa.post.softnms_greedy import (
    _greedy,
    _greedy_side_by_side,
    pair_weights,
    soft_nms_greedy,
)

__all__ = ["pair_weights", "soft_nms_batch", "soft_nms_greedy", "soft_nms_rounds"]

#: A round selecting fewer candidates than this hands the rest to the greedy loop.
SLOW_ROUND = 8
#: Conflicting pairs per candidate above which the greedy loop is used from the start.
DENSE_PAIRS = 64


def _pair_iou(starts: Tensor, ends: Tensor, lens: Tensor, a: Tensor, b: Tensor) -> Tensor:
    # index_select, not t[idx]: the same values, ~5x cheaper per call on the CPU (see _take)
    inter = (torch.minimum(_take(ends, b), _take(ends, a)) - torch.maximum(_take(starts, b), _take(starts, a))
             ).clamp(min=0)
    return inter / (_take(lens, b) + _take(lens, a) - inter).clamp(min=1e-8)


def _take(t: Tensor, index: Tensor) -> Tensor:
    """``t[index]`` for a 1-D ``t`` and a 1-D long ``index``.  ``index_select`` gives the same values as
    advanced indexing but skips its generic machinery: for the few thousand elements of a Soft-NMS
    round it costs ~7 µs instead of ~40 µs per call (``masked_select`` / ``index_fill_`` likewise
    replace ``t[mask]`` and ``t[index] = True``), which is most of a round's time."""
    return t.index_select(0, index)


def _overlaps(segs: Tensor, groups: Tensor) -> tuple[Tensor, Tensor]:
    """``(order, count)``: the candidates sorted by (group, start) and, per sorted position, how many
    later positions overlap it in the same group (each such pair is one conflict, counted once)."""
    both = segs.double()
    lo_t, hi_t = both.aminmax()
    lo = float(lo_t)
    span = float(hi_t) - lo
    offset = groups.double() * (2.0 * span + 1.0)              # groups never overlap on this axis
    key_s, key_e = both[:, 0] - lo + offset, both[:, 1] - lo + offset
    order = torch.argsort(key_s, stable=True)
    sorted_s = _take(key_s, order)
    # sorted position p overlaps the later positions p+1 .. stop-1 (start < its end)
    stop = torch.searchsorted(sorted_s, _take(key_e, order), side="left")
    return order, (stop - torch.arange(order.numel()) - 1).clamp(min=0)


def _pairs(order: Tensor, count: Tensor) -> tuple[Tensor, Tensor]:
    """The pairs ``(src, dst)`` of :func:`_overlaps`, both directions: first every ``(earlier,
    later)`` pair in sorted order, then the same pairs reversed."""
    pos = torch.arange(order.numel())
    first = torch.repeat_interleave(pos, count)
    if first.numel() == 0:
        empty = torch.zeros(0, dtype=torch.long)
        return empty, empty
    base = torch.repeat_interleave(torch.cumsum(count, 0) - count, count)
    second = first + 1 + (torch.arange(first.numel()) - base)
    a, b = _take(order, first), _take(order, second)
    return torch.cat([a, b]), torch.cat([b, a])


def _joined(items: list[tuple[Tensor, Tensor, Tensor]]) -> tuple[Tensor, Tensor, Tensor, Tensor]:
    """``(segs, scores, groups, item)`` of all items end to end; each item's groups are moved to a
    range of their own, so that no two items' candidates ever conflict."""
    if len(items) == 1:
        segs, scores, groups = items[0]
        return segs, scores.clone(), groups, torch.zeros(segs.shape[0], dtype=torch.long)
    sizes = torch.tensor([s.shape[0] for s, _, _ in items])
    item = torch.repeat_interleave(torch.arange(len(items)), sizes)
    groups = torch.cat([g for _, _, g in items]).long()
    g_lo, g_hi = (int(x) for x in groups.aminmax())
    groups = groups - g_lo + item * (g_hi - g_lo + 1)
    return (torch.cat([s for s, _, _ in items]), torch.cat([sc for _, sc, _ in items]), groups, item)


def _dense(item: Tensor, order: Tensor, count: Tensor, sizes: list[int]) -> list[bool]:
    """Per item of :func:`_overlaps` of joined items: more than ``DENSE_PAIRS`` conflicting pairs
    (both directions) per candidate."""
    pairs = torch.bincount(_take(item, order), weights=count.double(), minlength=len(sizes)).tolist()
    return [2 * int(p) > DENSE_PAIRS * n for p, n in zip(pairs, sizes)]


def _dense_items(items: list[tuple[Tensor, Tensor, Tensor]]) -> list[bool]:
    """:func:`_dense` of each item (one counting pass over all of them)."""
    segs, _, groups, item = _joined(items)
    return _dense(item, *_overlaps(segs, groups), [s.shape[0] for s, _, _ in items])


def soft_nms_rounds(segs: Tensor, scores: Tensor, groups: Tensor, *, method: str, iou_threshold: float,
                    sigma: float, min_score: float, max_num: int) -> tuple[Tensor, Tensor]:
    """Vectorised exact Soft-NMS (see the module docstring); ``max_num <= 0``: no cap.

    With a cap, only the best candidates by input score take part at first: a candidate of input
    score below ``tau`` is selected (if ever) with a score below ``tau`` and decays only candidates
    selected after it, so every selection scoring ``>= tau`` is the same with or without the
    candidates below ``tau``.  When ``max_num`` selections reach ``tau`` they are the result;
    otherwise the pool grows (x4) until it holds every candidate.
    """
    return soft_nms_batch([(segs, scores, groups)], method=method, iou_threshold=iou_threshold, sigma=sigma,
                          min_score=min_score, max_num=max_num)[0]


def _pooled_rounds(items: list[tuple[Tensor, Tensor, Tensor]], *, pool: int, method: str, iou_threshold: float,
                   sigma: float, min_score: float, max_num: int) -> list[tuple[Tensor, Tensor]]:
    """:func:`soft_nms_rounds` of items known not to be dense, all in one :func:`_rounds`: each item
    larger than ``pool`` takes part with its best ``pool`` candidates (scores ``>= tau``); an item
    whose pool turns out too small is run again alone with a 4x larger one."""
    kw = {"method": method, "iou_threshold": iou_threshold, "sigma": sigma, "min_score": min_score,
          "max_num": max_num}
    subs: list[Tensor | None] = []
    taus: list[Tensor | None] = []
    parts = []
    for segs, scores, groups in items:
        n = segs.shape[0]
        if max_num <= 0 or n <= pool:
            subs.append(None)
            taus.append(None)
            parts.append((segs, scores, groups))
            continue
        tau = torch.kthvalue(scores, n - pool + 1).values      # the pool-th highest score
        sub = (scores >= tau).nonzero().squeeze(1)
        subs.append(sub)
        taus.append(tau)
        parts.append((segs.index_select(0, sub), _take(scores, sub), _take(groups, sub)))
    out = []
    for item, sub, tau, (idx, sc) in zip(items, subs, taus, _rounds(parts, **kw)):
        if sub is None:
            out.append((idx, sc))
        elif int((sc >= tau).sum()) >= max_num:
            out.append((_take(sub, idx), sc))
        else:
            out.append(_pooled_rounds([item], pool=4 * pool, **kw)[0])
    return out


def _rounds(items: list[tuple[Tensor, Tensor, Tensor]], *, method: str, iou_threshold: float, sigma: float,
            min_score: float, max_num: int) -> list[tuple[Tensor, Tensor]]:
    """The rounds over all of each item (see the module docstring), every item in the same Python
    iterations: one conflict graph of all items (no pair crosses two items, see :func:`_joined`),
    so a round of the joined candidates is a round of each item alone (the same picks, and the same
    decay factors multiplied in the same order); each item stops, or hands its rest to the greedy
    loop, exactly where it would alone."""
    v = len(items)
    sizes = [s.shape[0] for s, _, _ in items]
    ends_at = torch.tensor(sizes).cumsum(0)
    begins = (ends_at - torch.tensor(sizes)).tolist()
    limits = [n if max_num <= 0 else min(max_num, n) for n in sizes]
    segs, work, groups, item = _joined(items)
    n = segs.shape[0]
    starts, ends = segs[:, 0], segs[:, 1]
    lens = (ends - starts).clamp(min=0)
    order, count = _overlaps(segs, groups)
    dense = _dense(item, order, count, sizes)
    alive = work >= min_score
    sel_idx: list[Tensor] = []
    sel_score: list[Tensor] = []
    sel_item: list[int] = []          # the item of a greedy tail in sel_*, -1: a round (any items)
    kw = {"method": method, "iou_threshold": iou_threshold, "sigma": sigma, "min_score": min_score}

    def finish_greedily(k: int, rest: Tensor, done: Tensor) -> None:
        gi, gs = _greedy(_take(starts, rest), _take(ends, rest), _take(lens, rest), _take(work, rest),
                         _take(groups, rest), limit=limits[k], done=done, **kw)
        sel_idx.append(_take(rest, gi))
        sel_score.append(gs)
        sel_item.append(k)

    if any(dense):
        # a dense conflict graph: every round would touch many pairs per pick; greedy is cheaper
        for k in (k for k in range(v) if dense[k]):
            finish_greedily(k, torch.arange(begins[k], begins[k] + sizes[k]), torch.zeros(0))
        gone = torch.tensor(dense)
        alive &= ~_take(gone, item)
        count = torch.where(_take(_take(gone, item), order), 0, count)
    src, dst = _pairs(order, count)
    w = pair_weights(_pair_iou(starts, ends, lens, src, dst), method, iou_threshold, sigma)
    keep = (w < 1.0).nonzero().squeeze(1)
    src, dst, w = _take(src, keep), _take(dst, keep), _take(w, keep)
    has_zero = bool((w <= 0).any())        # a zero weight kills its candidate whatever min_score is
    taken = torch.zeros(v, dtype=torch.long)
    lim = torch.tensor(limits)
    while bool(alive.any()):
        live = (_take(alive, src) & _take(alive, dst)).nonzero().squeeze(1)
        src, dst, w = _take(src, live), _take(dst, live), _take(w, live)
        ws, wd = _take(work, src), _take(work, dst)
        beaten = (wd > ws) | ((wd == ws) & (dst < src))         # dst beats src: src is no local max
        loser = torch.zeros(n, dtype=torch.uint8).scatter_reduce_(0, src, beaten.view(torch.uint8), "amax")
        chosen = alive & ~loser.view(torch.bool)
        picked = chosen.nonzero().squeeze(1)
        sel_idx.append(picked)
        sel_score.append(_take(work, picked))
        sel_item.append(-1)
        alive &= ~chosen
        hit = (_take(chosen, src) & _take(alive, dst)).nonzero().squeeze(1)   # the chosen's neighbours
        if hit.numel():
            d, wh = _take(dst, hit), _take(w, hit)
            factor = torch.ones(n).scatter_reduce_(0, d, wh, reduce="prod")
            work = work * factor
            alive &= work >= min_score
            if has_zero:
                alive &= torch.ones(n, dtype=torch.bool).index_fill_(0, d.masked_select(wh <= 0), False)
        n_picked = torch.bincount(_take(item, picked), minlength=v)
        taken += n_picked
        n_alive = torch.bincount(item, weights=alive, minlength=v) if v > 1 else alive.sum()[None]
        full = (taken >= lim) & (n_alive > 0)
        if bool(full.any()):
            # an item stops once `limit` of its selections score above its best remaining candidate
            best = torch.full((v,), float("-inf")).scatter_reduce_(
                0, item, torch.where(alive, work, float("-inf")), reduce="amax")
            sel = torch.cat(sel_idx)
            above = torch.cat(sel_score) > _take(best, _take(item, sel))
            stop = full & (torch.bincount(_take(item, sel), weights=above, minlength=v) >= lim)
            if bool(stop.any()):
                alive &= ~_take(stop, item)
                n_alive = torch.where(stop, 0, n_alive)
        pairs_k = torch.bincount(_take(item, src), minlength=v).tolist()
        for k, (p_k, a_k, s_k) in enumerate(zip(n_picked.tolist(), n_alive.tolist(), pairs_k)):
            if a_k and (p_k < SLOW_ROUND or s_k > p_k * (10 * a_k + 65536)):
                # a slow round (chains of overlapping candidates): it costs more per pick than a
                # greedy step, so this item finishes greedily — exact, as its selections so far were
                # greedy picks whose decays are applied, and non-conflicting picks commute
                mine = alive & (item == k)
                done = [sc.masked_select(_take(item, ix) == k) if j < 0 else sc
                        for ix, sc, j in zip(sel_idx, sel_score, sel_item) if j in (-1, k)]
                finish_greedily(k, mine.nonzero().squeeze(1), torch.cat(done))
                alive &= ~mine
    return _split(sel_idx, sel_score, item, begins, limits)


def _split(sel_idx: list[Tensor], sel_score: list[Tensor], item: Tensor, begins: list[int], limits: list[int]
           ) -> list[tuple[Tensor, Tensor]]:
    """Each item's selections in greedy order (score descending, ties to the lower index), cut at its
    limit, as indices into the item."""
    v = len(begins)
    if not sel_idx:
        return [(torch.zeros(0, dtype=torch.long), torch.zeros(0)) for _ in range(v)]
    idx, sc = torch.cat(sel_idx), torch.cat(sel_score)
    order = torch.argsort(idx, stable=True)
    order = _take(order, torch.argsort(_take(sc, order), descending=True, stable=True))
    owner = _take(item, _take(idx, order))
    if v > 1:
        order = _take(order, torch.argsort(owner, stable=True))
        owner = _take(item, _take(idx, order))
    counts = torch.bincount(owner, minlength=v).tolist()
    out = []
    for part, k in zip(order.split(counts), range(v)):
        part = part[:limits[k]]
        out.append((_take(idx, part) - begins[k], _take(sc, part)))
    return out


def soft_nms_batch(items: list[tuple[Tensor, Tensor, Tensor]], *, method: str, iou_threshold: float,
                   sigma: float, min_score: float, max_num: int) -> list[tuple[Tensor, Tensor]]:
    """:func:`soft_nms_rounds` of every ``(segs, scores, groups)``, the same result per item: the
    items with sparse conflict graphs run their rounds together (:func:`_pooled_rounds`), those with
    dense ones their greedy loops side by side (one Python iteration per pick for all of them;
    elementwise the same float32 operations, so the same result)."""
    kw = {"method": method, "iou_threshold": iou_threshold, "sigma": sigma, "min_score": min_score}
    out: list[tuple[Tensor, Tensor]] = [(torch.zeros(0, dtype=torch.long), torch.zeros(0))] * len(items)
    live = [k for k, (segs, _, _) in enumerate(items) if segs.shape[0]]
    dense_flags = _dense_items([items[k] for k in live]) if live else []
    dense = [k for k, d in zip(live, dense_flags) if d]
    sparse = [k for k, d in zip(live, dense_flags) if not d]
    if sparse:
        for k, res in zip(sparse, _pooled_rounds([items[k] for k in sparse], pool=4 * max_num, max_num=max_num,
                                                 **kw)):
            out[k] = res
    if dense:
        for k, res in zip(dense, _greedy_side_by_side([items[k] for k in dense], max_num=max_num, **kw)):
            out[k] = res
    return out
