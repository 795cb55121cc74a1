"""ActionFormer training losses: sigmoid focal loss, 1-D DIoU loss and the combined :class:`TALLoss`."""

from __future__ import annotations

from collections.abc import Sequence

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from losa.head.assign import assign_labels
from losa.errors import LosaError

__all__ = ["sigmoid_focal_loss", "diou_loss_1d", "TALLoss"]

_REDUCTIONS = ("none", "mean", "sum")


def _reduce(loss: Tensor, reduction: str) -> Tensor:
    if reduction == "sum":
        return loss.sum()
    if reduction == "mean":
        return loss.mean() if loss.numel() else loss.sum() * 0.0
    if reduction == "none":
        return loss
    raise ValueError(f"reduction must be one of {_REDUCTIONS}, got {reduction!r}")


def sigmoid_focal_loss(
    logits: Tensor,
    targets: Tensor,
    alpha: float = 0.25,
    gamma: float = 2.0,
    reduction: str = "sum",
) -> Tensor:
    """Focal loss of RetinaNet on logits: ``alpha_t * (1 - p_t) ** gamma * BCE(logits, targets)``.

    ``targets`` are in [0, 1] (soft targets allowed); ``alpha < 0`` disables the class weighting.
    Computed in float32.
    """
    logits = logits.float()
    targets = targets.float()
    p = torch.sigmoid(logits)
    ce = F.binary_cross_entropy_with_logits(logits, targets, reduction="none")
    p_t = p * targets + (1 - p) * (1 - targets)
    loss = ce * (1 - p_t) ** gamma
    if alpha >= 0:
        loss = (alpha * targets + (1 - alpha) * (1 - targets)) * loss
    return _reduce(loss, reduction)


def diou_loss_1d(
    pred: Tensor,
    target: Tensor,
    reduction: str = "sum",
    fmt: str = "offsets",
    eps: float = 1e-8,
) -> Tensor:
    """Distance-IoU loss for 1-D segments: ``1 - IoU + (centre distance / enclosing length) ** 2``.

    ``fmt="offsets"``: rows are (left, right) distances from a shared anchor point (segment
    ``[-left, right]``), as predicted by the head; ``fmt="segments"``: rows are (start, end).
    The loss is 0 for identical segments and exceeds 1 for disjoint ones.  Computed in float32.
    """
    if fmt not in ("offsets", "segments"):
        raise ValueError(f"fmt must be 'offsets' or 'segments', got {fmt!r}")
    pred, target = pred.float(), target.float()
    if fmt == "offsets":
        ps, pe, ts, te = -pred[..., 0], pred[..., 1], -target[..., 0], target[..., 1]
    else:
        ps, pe, ts, te = pred[..., 0], pred[..., 1], target[..., 0], target[..., 1]
    inter = (torch.minimum(pe, te) - torch.maximum(ps, ts)).clamp(min=0)
    union = (pe - ps) + (te - ts) - inter
    iou = inter / union.clamp(min=eps)
    enclosing = torch.maximum(pe, te) - torch.minimum(ps, ts)
    centre_dist = 0.5 * ((ps + pe) - (ts + te))
    loss = 1.0 - iou + (centre_dist / enclosing.clamp(min=eps)) ** 2
    return _reduce(loss, reduction)


class TALLoss(nn.Module):
    """ActionFormer loss: focal classification over valid points + DIoU regression over positives.

    Both terms are divided by an EMA of the number of positive points per batch (momentum 0.9,
    initial value 100; updated only in training mode and kept as a buffer so it is checkpointed).
    ``final_loss = cls_loss + w * reg_loss`` with ``w = reg_weight``, or, when ``reg_weight < 0``,
    the adaptive ``w = cls_loss.detach() / max(reg_loss, 0.01)`` of ActionFormer.
    """

    loss_normalizer: Tensor

    def __init__(
        self,
        num_classes: int,
        *,
        center_sample: str = "radius",
        center_radius: float = 1.5,
        reg_weight: float = 1.0,
        label_smoothing: float = 0.0,
        init_loss_norm: float = 100.0,
        loss_norm_momentum: float = 0.9,
        focal_alpha: float = 0.25,
        focal_gamma: float = 2.0,
    ) -> None:
        super().__init__()
        if center_sample not in ("radius", "none"):
            raise LosaError(f"center_sample must be 'radius' or 'none', got {center_sample!r}")
        if not 0.0 <= loss_norm_momentum < 1.0:
            raise LosaError(f"loss_norm_momentum must be in [0, 1), got {loss_norm_momentum}")
        self.num_classes = num_classes
        self.center_sample = center_sample
        self.center_radius = center_radius
        self.reg_weight = reg_weight
        self.label_smoothing = label_smoothing
        self.momentum = loss_norm_momentum
        self.focal_alpha = focal_alpha
        self.focal_gamma = focal_gamma
        self.register_buffer("loss_normalizer", torch.tensor(float(init_loss_norm)))

    def assign(
        self, points: Sequence[Tensor], targets: Sequence[tuple[Tensor, Tensor]]
    ) -> tuple[Tensor, Tensor]:
        """Targets for a batch: ``cls [B, N, K]`` and ``reg [B, N, 2]`` over the concatenated points."""
        pts = torch.cat(list(points), dim=0)
        out = [
            assign_labels(pts, segs, labels, self.num_classes, self.center_sample, self.center_radius)
            for segs, labels in targets
        ]
        return torch.stack([c for c, _ in out]), torch.stack([r for _, r in out])

    def forward(
        self,
        cls_logits: Sequence[Tensor],
        offsets: Sequence[Tensor],
        masks: Sequence[Tensor],
        points: Sequence[Tensor],
        targets: Sequence[tuple[Tensor, Tensor]],
    ) -> dict[str, Tensor]:
        """Losses for head outputs (lists over levels of ``[B, T_l, K]``, ``[B, T_l, 2]``, ``[B, T_l]``),
        the matching ``points`` (list of ``[T_l, 4]``) and per-video ``(segments [M, 2], labels [M])``
        in level-0 grid units."""
        logits = torch.cat(list(cls_logits), dim=1)
        pred_off = torch.cat(list(offsets), dim=1)
        valid = torch.cat(list(masks), dim=1)
        if len(targets) != logits.shape[0]:
            raise ValueError(f"got {len(targets)} target entries for a batch of {logits.shape[0]} videos")
        if sum(p.shape[0] for p in points) != logits.shape[1]:
            raise ValueError("points do not match the head outputs (different per-level lengths)")
        gt_cls, gt_off = self.assign(points, targets)
        pos = (gt_cls.sum(-1) > 0) & valid
        num_pos = int(pos.sum())
        if self.training:
            count = float(max(num_pos, 1))
            if torch.distributed.is_available() and torch.distributed.is_initialized():
                # one normaliser for all ranks (DDP): the mean positive count across the global batch
                total = torch.tensor([count], device=logits.device)
                torch.distributed.all_reduce(total)
                count = float(total.item()) / torch.distributed.get_world_size()
            new = self.momentum * self.loss_normalizer + (1 - self.momentum) * count
            self.loss_normalizer.copy_(new)
        norm = self.loss_normalizer.detach()

        target = gt_cls[valid]
        if self.label_smoothing > 0:
            target = target * (1 - self.label_smoothing) + self.label_smoothing / (self.num_classes + 1)
        cls_loss = sigmoid_focal_loss(
            logits[valid], target, self.focal_alpha, self.focal_gamma, reduction="sum"
        ) / norm
        if num_pos == 0:
            reg_loss = pred_off.sum().float() * 0.0
        else:
            reg_loss = diou_loss_1d(pred_off[pos], gt_off[pos], reduction="sum") / norm
        if self.reg_weight >= 0:
            weight: float | Tensor = self.reg_weight
        else:
            weight = cls_loss.detach() / max(float(reg_loss.detach()), 0.01)
        return {"cls_loss": cls_loss, "reg_loss": reg_loss, "final_loss": cls_loss + weight * reg_loss}
