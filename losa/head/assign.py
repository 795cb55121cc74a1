"""ActionFormer label assignment: which pyramid points are positives for which ground-truth action.

A point ``t`` (level-0 grid units) of a level with stride ``s`` and regression range ``[lo, hi]`` is a
positive for a ground-truth segment ``[a, b]`` when

* it lies strictly inside the segment (``a < t < b``); with ``center_sample="radius"`` it must also lie
  strictly inside ``[c - r*s, c + r*s]`` where ``c = (a + b) / 2`` and ``r = center_radius``;
* its largest boundary distance ``max(t - a, b - t)`` lies within ``[lo, hi]``.

If several segments qualify, the shortest wins; the regression target is the (left, right) distance
to the chosen segment divided by the stride. Segments with the chosen one's extent (both boundaries
within 1e-3: THUMOS' duplicated annotations, or one span labelled with several classes in a
multi-label dataset) all set their class. ActionFormer sets the class of every qualifying segment
within 1e-3 of the shortest *length*; the two rules differ only for equal-length segments of
different classes that overlap (multi-label data), where ActionFormer would make a point positive
for a class whose segment it does not regress.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import Tensor

__all__ = ["assign_labels"]


@torch.no_grad()
def assign_labels(
    points: Tensor,
    gt_segments: Tensor,
    gt_labels: Tensor,
    num_classes: int,
    center_sample: str = "radius",
    center_radius: float = 1.5,
) -> tuple[Tensor, Tensor]:
    """Assign targets to the concatenated point table of one video.

    Args:
        points: ``[N, 4]`` rows (t, range_lo, range_hi, stride), all levels concatenated.
        gt_segments: ``[M, 2]`` (start, end) in level-0 grid units.
        gt_labels: ``[M]`` integer class ids in ``[0, num_classes)``.
        num_classes: number of action classes ``K``.
        center_sample: ``"radius"`` (centre sampling) or ``"none"``.
        center_radius: centre-sampling radius in units of the level stride.

    Returns:
        ``cls_targets [N, K]`` float (one-hot; all zeros = negative) and ``reg_targets [N, 2]``
        (left, right) offsets normalised by the stride (zeros at negative points).
    """
    if points.dim() != 2 or points.shape[1] != 4:
        raise ValueError(f"points must be [N, 4], got shape {tuple(points.shape)}")
    if center_sample not in ("radius", "none"):
        raise ValueError(f"center_sample must be 'radius' or 'none', got {center_sample!r}")
    dtype, device = points.dtype, points.device
    segs = torch.as_tensor(gt_segments, dtype=dtype, device=device).reshape(-1, 2)
    labels = torch.as_tensor(gt_labels, device=device).reshape(-1).long()
    n, m = points.shape[0], segs.shape[0]
    if labels.shape[0] != m:
        raise ValueError(f"got {m} ground-truth segments but {labels.shape[0]} labels")
    if m == 0:
        return points.new_zeros(n, num_classes), points.new_zeros(n, 2)
    bad = ((labels < 0) | (labels >= num_classes)).nonzero()
    if bad.numel():
        i = int(bad[0, 0])
        raise ValueError(f"ground-truth label {int(labels[i])} (segment {i}) outside 0..{num_classes - 1}")
    bad = (segs[:, 1] < segs[:, 0]).nonzero()
    if bad.numel():
        i = int(bad[0, 0])
        raise ValueError(f"ground-truth segment {i} ends before it starts: {segs[i].tolist()}")

    t, lo, hi, stride = (points[:, i : i + 1] for i in range(4))  # each [N, 1]
    starts, ends = segs[:, 0][None], segs[:, 1][None]  # [1, M]
    left, right = t - starts, ends - t  # [N, M]
    if center_sample == "radius":
        centre = 0.5 * (starts + ends)
        inner_left = t - torch.maximum(centre - stride * center_radius, starts)
        inner_right = torch.minimum(centre + stride * center_radius, ends) - t
        inside = torch.minimum(inner_left, inner_right) > 0
    else:
        inside = torch.minimum(left, right) > 0
    reach = torch.maximum(left, right)
    in_range = (reach >= lo) & (reach <= hi)

    lens = (ends - starts).expand(n, m).masked_fill(~(inside & in_range), float("inf"))
    min_len, best = lens.min(dim=1)
    best_seg = segs[best]  # [N, 2]
    same_extent = ((segs[None, :, 0] - best_seg[:, None, 0]).abs() <= 1e-3) & (
        (segs[None, :, 1] - best_seg[:, None, 1]).abs() <= 1e-3)
    chosen = same_extent & torch.isfinite(lens)  # [N, M]
    one_hot = F.one_hot(labels, num_classes).to(dtype)
    cls_targets = (chosen.to(dtype) @ one_hot).clamp_(max=1.0)

    rows = torch.arange(n, device=device)
    reg_targets = torch.stack([left[rows, best], right[rows, best]], dim=1) / stride
    reg_targets = reg_targets * torch.isfinite(min_len)[:, None].to(dtype)
    return cls_targets, reg_targets
