"""Decode ActionFormer head outputs into scored segments and apply Soft-NMS (per video).

All segments are in level-0 grid units (feature steps); converting to seconds (e.g. with the
per-step centre times recorded in the activation store) is left to the caller.
"""

from __future__ import annotations

from collections.abc import Sequence

import torch
from torch import Tensor

from losa.post.nms import soft_nms_videos

__all__ = ["decode_predictions", "postprocess", "Detections"]

Detections = tuple[Tensor, Tensor, Tensor]  # (segments [n, 2], scores [n], labels [n] long)


@torch.no_grad()
def decode_predictions(
    cls_logits: Sequence[Tensor],
    offsets: Sequence[Tensor],
    masks: Sequence[Tensor],
    points: Sequence[Tensor],
    pre_nms_thresh: float = 1e-3,
    pre_nms_topk: int = 5000,
    duration_thresh: float = 0.05,
) -> list[Detections]:
    """Turn head outputs into candidate segments, per video (ActionFormer's inference step).

    For every level: scores = sigmoid(logits) at valid steps; keep (step, class) pairs with score
    above ``pre_nms_thresh``, then the ``pre_nms_topk`` best of them; segment =
    ``(t - left * stride, t + right * stride)``; drop segments not longer than ``duration_thresh``.
    Returns one ``(segments [n, 2], scores [n], labels [n])`` triple per video, levels concatenated.
    """
    if not (len(cls_logits) == len(offsets) == len(masks) == len(points)):
        raise ValueError("cls_logits, offsets, masks and points must have one entry per level")
    batch = cls_logits[0].shape[0]
    results: list[Detections] = []
    for b in range(batch):
        segs_all, scores_all, labels_all = [], [], []
        for logit, off, mask, pts in zip(cls_logits, offsets, masks, points):
            num_classes = logit.shape[-1]
            prob = (torch.sigmoid(logit[b].float()) * mask[b, :, None].float()).flatten()
            keep = (prob > pre_nms_thresh).nonzero(as_tuple=True)[0]
            kept = prob[keep]
            k = min(pre_nms_topk, keep.numel()) if pre_nms_topk > 0 else keep.numel()
            kept, order = kept.sort(descending=True)
            kept, keep = kept[:k], keep[order[:k]]
            step = torch.div(keep, num_classes, rounding_mode="floor")
            label = keep % num_classes
            o, p = off[b].float()[step], pts[step]
            seg = torch.stack([p[:, 0] - o[:, 0] * p[:, 3], p[:, 0] + o[:, 1] * p[:, 3]], dim=-1)
            long_enough = (seg[:, 1] - seg[:, 0]) > duration_thresh
            segs_all.append(seg[long_enough])
            scores_all.append(kept[long_enough])
            labels_all.append(label[long_enough])
        results.append((torch.cat(segs_all), torch.cat(scores_all), torch.cat(labels_all)))
    return results


@torch.no_grad()
def postprocess(
    cls_logits: Sequence[Tensor],
    offsets: Sequence[Tensor],
    masks: Sequence[Tensor],
    points: Sequence[Tensor],
    *,
    pre_nms_thresh: float = 1e-3,
    pre_nms_topk: int = 5000,
    duration_thresh: float = 0.05,
    method: str = "gaussian",
    iou_threshold: float = 0.1,
    sigma: float = 0.5,
    min_score: float = 1e-3,
    max_seg_num: int = 200,
    multiclass: bool = True,
    voting_thresh: float = 0.0,
) -> list[Detections]:
    """:func:`decode_predictions` then :func:`~losa.post.nms.soft_nms` per video (results on the CPU).

    Keyword names match the NMS settings of the training config, so ``**nms_cfg.to_dict()`` can be
    passed.  ``method="none"`` skips NMS (candidates are only sorted and capped at ``max_seg_num``).
    """
    out: list[Detections] = []
    cands = [(s.cpu(), sc.cpu(), lab.cpu()) for s, sc, lab in decode_predictions(
        cls_logits, offsets, masks, points, pre_nms_thresh, pre_nms_topk, duration_thresh)]
    if method != "none":   # the batch's videos together (dense ones share their greedy loops)
        return soft_nms_videos(cands, iou_threshold=iou_threshold, sigma=sigma, min_score=min_score,
                               method=method, max_num=max_seg_num, multiclass=multiclass,
                               voting_thresh=voting_thresh)
    for segs, scores, labels in cands:
        order = scores.argsort(descending=True)
        if max_seg_num > 0:
            order = order[:max_seg_num]
        out.append((segs[order], scores[order], labels[order]))
    return out
