"""1-D (Soft-)NMS for temporal segments in plain torch (no compiled extension).

Soft-NMS (Bodla et al., 2017) as used by ActionFormer: repeatedly take the highest-scoring remaining
segment, then decay the scores of the remaining segments of the same class (``multiclass=True``) or of
all classes by a weight of their IoU with it:

* ``"gaussian"``: ``w = exp(-iou**2 / sigma)`` (``iou_threshold`` is not used);
* ``"linear"``:   ``w = 1 - iou`` if ``iou > iou_threshold`` else 1;
* ``"hard"``:     ``w = 0`` if ``iou > iou_threshold`` else 1 (classic NMS).

Segments whose score falls below ``min_score`` are discarded.  Because scores only decrease, the
selection order is non-increasing, so selection stops after ``max_num`` selections without changing
the result.  The selection runs vectorised in rounds (:func:`losa.post.softnms.soft_nms_rounds`:
every candidate that beats all its conflicting neighbours at once — exact, see there); the greedy
reference loop (``algorithm="greedy"``, O(max_num * N) Python iterations) gives the same result.
"""

from __future__ import annotations

from collections.abc import Sequence

import torch
from torch import Tensor

from losa.post.softnms import soft_nms_batch, soft_nms_greedy
from losa.errors import LosaError

__all__ = ["soft_nms", "soft_nms_videos", "segment_iou", "seg_voting", "NMS_METHODS"]

NMS_METHODS = ("gaussian", "linear", "hard")
#: Kept segments per chunk of :func:`seg_voting`.
VOTE_ROWS = 64


def segment_iou(segs_a: Tensor, segs_b: Tensor, eps: float = 1e-8) -> Tensor:
    """Pairwise temporal IoU ``[Na, Nb]`` between (start, end) rows of ``segs_a`` and ``segs_b``."""
    # contiguous columns broadcast as [Na, 1] x [1, Nb]: ~3x faster than strided [..., k] views
    a0, a1 = segs_a[:, 0].contiguous()[:, None], segs_a[:, 1].contiguous()[:, None]
    b0, b1 = segs_b[:, 0].contiguous()[None, :], segs_b[:, 1].contiguous()[None, :]
    inter = (torch.minimum(a1, b1) - torch.maximum(a0, b0)).clamp_(min=0)
    union = (a1 - a0).clamp_(min=0) + (b1 - b0).clamp_(min=0) - inter
    return inter / union.clamp_(min=eps)


def seg_voting(nms_segs: Tensor, all_segs: Tensor, all_scores: Tensor, iou_threshold: float) -> Tensor:
    """ActionFormer's segment voting: replace every kept segment by the mean of all candidates whose
    IoU with it is >= ``iou_threshold``, each weighted by ``score × IoU`` (the kept segment itself
    always votes, with weight ``score × 1``).  Rows go in chunks of ``VOTE_ROWS`` kept segments, so
    that the ``[rows, N]`` intermediates stay in cache (~2× faster at 200 × 2000; the same values)."""
    if nms_segs.shape[0] > VOTE_ROWS:
        return torch.cat([seg_voting(nms_segs[k:k + VOTE_ROWS], all_segs, all_scores, iou_threshold)
                          for k in range(0, nms_segs.shape[0], VOTE_ROWS)])
    iou = segment_iou(nms_segs, all_segs)
    weights = torch.where(iou >= iou_threshold, all_scores[None, :] * iou, 0.0)
    total = weights.sum(dim=1, keepdim=True)
    refined = (weights @ all_segs) / total.clamp(min=1e-12)
    return torch.where(total > 0, refined, nms_segs)


def _empty(labels: Tensor) -> tuple[Tensor, Tensor, Tensor]:
    return torch.zeros(0, 2), torch.zeros(0), torch.zeros(0, dtype=labels.dtype)


@torch.no_grad()
def soft_nms(
    segments: Tensor,
    scores: Tensor,
    labels: Tensor,
    iou_threshold: float = 0.1,
    sigma: float = 0.5,
    min_score: float = 1e-3,
    method: str = "gaussian",
    max_num: int = 200,
    multiclass: bool = True,
    voting_thresh: float = 0.0,
    algorithm: str = "rounds",
) -> tuple[Tensor, Tensor, Tensor]:
    """Soft-NMS over candidate segments ``[N, 2]`` (start, end) with ``scores [N]`` and ``labels [N]``.

    Returns ``(segments [n, 2], scores [n], labels [n])`` sorted by decreasing (decayed) score, at most
    ``max_num`` rows (``max_num <= 0``: no cap), on the CPU.  ``voting_thresh > 0`` refines the kept
    segments by :func:`seg_voting` against all input candidates; as in ActionFormer this is applied
    only to class-agnostic NMS (``multiclass=False``) and ignored otherwise.  ``algorithm``:
    ``"rounds"`` (vectorised, default) or ``"greedy"`` (the reference loop); both give one result.
    """
    if algorithm not in ("rounds", "greedy"):
        raise ValueError(f"unknown soft-NMS algorithm {algorithm!r} (rounds or greedy)")
    kw = dict(iou_threshold=iou_threshold, sigma=sigma, min_score=min_score, method=method,
              max_num=max_num, multiclass=multiclass, voting_thresh=voting_thresh)
    if algorithm == "rounds":
        return soft_nms_videos([(segments, scores, labels)], **kw)[0]
    prep = _prepare(segments, scores, labels, method, sigma, multiclass)
    if prep is None:
        return _empty(labels)
    segs, orig, labels, groups = prep
    idx, out_scores = soft_nms_greedy(segs, orig, groups, method=method, iou_threshold=iou_threshold,
                                      sigma=sigma, min_score=min_score, max_num=max_num)
    return _finish(segs, orig, labels, idx, out_scores, multiclass, voting_thresh)


def _prepare(segments: Tensor, scores: Tensor, labels: Tensor, method: str, sigma: float,
             multiclass: bool) -> tuple[Tensor, Tensor, Tensor, Tensor] | None:
    """Checked CPU float32 ``(segs, scores, labels, groups)``; None when there is no candidate."""
    if method not in NMS_METHODS:
        raise LosaError(f"unknown NMS method {method!r}; choose from {', '.join(NMS_METHODS)}")
    if method == "gaussian" and sigma <= 0:
        raise LosaError(f"gaussian soft-NMS needs sigma > 0, got {sigma}")
    if segments.dim() != 2 or segments.shape[-1] != 2:
        raise ValueError(f"segments must be [N, 2], got shape {tuple(segments.shape)}")
    n = segments.shape[0]
    if scores.shape != (n,) or labels.shape != (n,):
        raise ValueError(f"scores and labels must be [{n}], got {tuple(scores.shape)} and {tuple(labels.shape)}")
    if n == 0:
        return None
    labels = labels.detach().cpu()
    groups = labels.long() if multiclass else torch.zeros(n, dtype=torch.long)
    return segments.detach().float().cpu(), scores.detach().float().cpu(), labels, groups


def _finish(segs: Tensor, orig: Tensor, labels: Tensor, idx: Tensor, out_scores: Tensor,
            multiclass: bool, voting_thresh: float) -> tuple[Tensor, Tensor, Tensor]:
    out_segs = segs[idx]
    if voting_thresh > 0 and not multiclass:
        out_segs = seg_voting(out_segs, segs, orig, voting_thresh)
    order = torch.sort(out_scores, descending=True, stable=True).indices
    return out_segs[order], out_scores[order], labels[idx][order]


@torch.no_grad()
def soft_nms_videos(
    candidates: Sequence[tuple[Tensor, Tensor, Tensor]],
    iou_threshold: float = 0.1,
    sigma: float = 0.5,
    min_score: float = 1e-3,
    method: str = "gaussian",
    max_num: int = 200,
    multiclass: bool = True,
    voting_thresh: float = 0.0,
) -> list[tuple[Tensor, Tensor, Tensor]]:
    """:func:`soft_nms` of several videos' ``(segments, scores, labels)`` at once — the same result
    per video; videos whose conflict graphs are dense run their greedy loops together
    (:func:`losa.post.softnms.soft_nms_batch`)."""
    preps = [_prepare(s, sc, lab, method, sigma, multiclass) for s, sc, lab in candidates]
    live = [k for k, p in enumerate(preps) if p is not None]
    cores = soft_nms_batch([(preps[k][0], preps[k][1], preps[k][3]) for k in live], method=method,
                           iou_threshold=iou_threshold, sigma=sigma, min_score=min_score, max_num=max_num)
    out = [_empty(lab) for _, _, lab in candidates]
    for k, (idx, sc) in zip(live, cores):
        segs, orig, labels, _ = preps[k]
        out[k] = _finish(segs, orig, labels, idx, sc, multiclass, voting_thresh)
    return out
