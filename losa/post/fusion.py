"""Fuse class-agnostic detections with video-level classification scores (pure math, no files).

The ActivityNet-1.3 protocol of the anchors (ActionFormer, OpenTAD/AdaTAD) trains a detector with a
single "action" class and labels its segments afterwards with an external video classifier: each of
the ``topk`` best classes of the video is paired with every segment, and the pair's score combines
the class score ``c`` with the segment score ``s``:

* ``"sqrt"``:    ``sqrt(c * s)`` (geometric mean; ActionFormer ``postprocessing.py``, OpenTAD
  ``StandardClassifier``);
* ``"product"``: ``c * s`` (OpenTAD ``CUHKANETClassifier``);
* ``"segment"``: ``s`` (class order only matters through which classes are paired).

``softmax=True`` first turns raw class logits into probabilities. Ties between class scores are
broken towards the lower class index.
"""

from __future__ import annotations

import numpy as np

__all__ = ["FUSION_FORMULAS", "combine", "fuse_video", "top_classes"]

FUSION_FORMULAS = ("sqrt", "product", "segment")


def top_classes(class_scores: np.ndarray, topk: int, softmax: bool = False
                ) -> tuple[np.ndarray, np.ndarray]:
    """Indices and scores of the ``topk`` best classes (best first; fewer if there are fewer)."""
    scores = np.asarray(class_scores, dtype=np.float64).reshape(-1)
    if scores.size == 0:
        raise ValueError("no class scores")
    if not np.all(np.isfinite(scores)):
        raise ValueError("class scores are not all finite")
    if topk < 1:
        raise ValueError(f"topk must be >= 1, got {topk}")
    if softmax:
        e = np.exp(scores - scores.max())
        scores = e / e.sum()
    order = np.argsort(-scores, kind="stable")[:topk]
    return order, scores[order]


def combine(class_score: np.ndarray, segment_score: np.ndarray, formula: str = "sqrt") -> np.ndarray:
    """Fused score of class score(s) and segment score(s) (numpy broadcasting)."""
    c = np.asarray(class_score, dtype=np.float64)
    s = np.asarray(segment_score, dtype=np.float64)
    if formula == "sqrt":
        if np.any(c < 0) or np.any(s < 0):
            raise ValueError("formula 'sqrt' needs non-negative scores (use softmax for logits)")
        return np.sqrt(c * s)
    if formula == "product":
        return c * s
    if formula == "segment":
        return np.broadcast_to(s, np.broadcast_shapes(c.shape, s.shape)).copy()
    raise ValueError(f"unknown fusion formula {formula!r}; choose from {', '.join(FUSION_FORMULAS)}")


def fuse_video(segment_scores: np.ndarray, class_scores: np.ndarray, topk: int = 2,
               formula: str = "sqrt", softmax: bool = False, max_segments: int = 0
               ) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Pair the ``topk`` classes of one video with each of its class-agnostic segments.

    ``segment_scores [N]``; ``class_scores [K]``; ``max_segments > 0`` keeps only that many best
    segments first (ActionFormer's ``num_pred``). Returns ``(segment index [k*n], class index [k*n],
    fused score [k*n])`` sorted by decreasing fused score (stable: the better class first, then the
    better segment); the caller looks segments up by index.
    """
    seg = np.asarray(segment_scores, dtype=np.float64).reshape(-1)
    order = np.argsort(-seg, kind="stable")
    if max_segments > 0:
        order = order[:max_segments]
    cls_idx, cls_score = top_classes(class_scores, topk, softmax)
    fused = combine(cls_score[:, None], seg[order][None, :], formula)   # [k, n]
    seg_index = np.tile(order, len(cls_idx))
    class_index = np.repeat(cls_idx, len(order))
    fused = fused.reshape(-1)
    rank = np.argsort(-fused, kind="stable")
    return seg_index[rank], class_index[rank], fused[rank]
