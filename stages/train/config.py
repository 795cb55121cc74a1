"""Training hyper-parameters (`TrainConfig`) and the post-processing (NMS) settings used at eval time.

Defaults follow the ActionFormer THUMOS-14 recipe (AdamW, linear warm-up then cosine decay applied per
iteration, gradient clipping at 1.0, model EMA with decay 0.999 whose weights are the ones evaluated),
scaled to the LoSA setting (lr 1e-4, batch 2, 30 epochs).
"""
from __future__ import annotations

import dataclasses
from dataclasses import dataclass, field
from typing import Any, Mapping

AMP_CHOICES = ("auto", "off", "bf16", "fp16")


class TrainConfigError(ValueError):
    """An invalid or unknown training setting."""


@dataclass
class NMSConfig:
    """Soft-NMS / post-processing settings (ActionFormer names and THUMOS defaults)."""

    method: str = "gaussian"  # soft-NMS decay: "gaussian" | "linear" | "hard" | "none"
    iou_threshold: float = 0.1
    sigma: float = 0.5
    min_score: float = 1e-3
    max_seg_num: int = 200
    voting_thresh: float = 0.7  # score voting IoU threshold; 0 disables voting
    pre_nms_topk: int = 2000
    pre_nms_thresh: float = 1e-3
    duration_thresh: float = 0.05  # drop segments shorter than this (step units)
    multiclass: bool = True

    def to_dict(self) -> dict[str, Any]:
        return dataclasses.asdict(self)

    @classmethod
    def from_dict(cls, d: Mapping[str, Any] | None) -> NMSConfig:
        return _from_dict(cls, d or {}, "nms")


@dataclass
class TrainConfig:
    """Everything that controls the optimisation loop (the model has its own `LoSAConfig`)."""

    epochs: int = 30
    batch_size: int = 2
    lr: float = 1e-4
    weight_decay: float = 0.05
    warmup_epochs: int = 5
    schedule: str = "cosine"  # "cosine" | "constant" (both after the linear warm-up)
    min_lr_ratio: float = 0.0  # cosine floor as a fraction of lr
    clip_grad: float = 1.0  # <= 0 disables clipping
    ema_decay: float = 0.999  # 0 disables the EMA (raw weights are evaluated)
    amp: str = "auto"  # auto: bf16 autocast on CUDA, fp32 on CPU
    seed: int = 2025
    num_workers: int = 0
    max_seq_len: int = 2304
    trunc_thresh: float = 0.5
    crop_ratio: tuple[float, float] | None = (0.9, 1.0)
    eval_every: int = 0  # evaluate on the validation subset every N epochs (0: only at the end)
    eval_batch_size: int = 4
    checkpoint_every: int = 1
    eval_tious: str = "0.3:0.1:0.7"  # tIoU thresholds of the validation mAP (THUMOS-14 default)
    cache_features: bool = False  # keep each video's features in RAM after the first read
    # ActivityNet protocol: every video resampled to this many steps (linear; 0 = native length)
    resample_steps: int = 0
    # train one "action" class; label detections with external video-level scores at prediction
    class_agnostic: bool = False
    device: str = "auto"
    nms: NMSConfig = field(default_factory=NMSConfig)

    def __post_init__(self) -> None:
        if isinstance(self.nms, Mapping):
            self.nms = NMSConfig.from_dict(self.nms)
        if self.crop_ratio is not None:
            self.crop_ratio = (float(self.crop_ratio[0]), float(self.crop_ratio[1]))
        self.validate()

    def validate(self) -> None:
        """Raise `TrainConfigError` naming the first bad field."""
        checks = [
            ("epochs", self.epochs >= 1),
            ("batch_size", self.batch_size >= 1),
            ("lr", self.lr > 0),
            ("weight_decay", self.weight_decay >= 0),
            ("warmup_epochs", 0 <= self.warmup_epochs),
            ("schedule", self.schedule in ("cosine", "constant")),
            ("min_lr_ratio", 0.0 <= self.min_lr_ratio <= 1.0),
            ("ema_decay", 0.0 <= self.ema_decay < 1.0),
            ("amp", self.amp in AMP_CHOICES),
            ("num_workers", self.num_workers >= 0),
            ("max_seq_len", self.max_seq_len >= 1),
            ("trunc_thresh", 0.0 <= self.trunc_thresh <= 1.0),
            ("eval_every", self.eval_every >= 0),
            ("eval_batch_size", self.eval_batch_size >= 1),
            ("checkpoint_every", self.checkpoint_every >= 1),
            ("resample_steps", self.resample_steps >= 0),
        ]
        if self.crop_ratio is not None:
            lo, hi = self.crop_ratio
            checks.append(("crop_ratio", 0.0 < lo <= hi <= 1.0))
        for name, ok in checks:
            if not ok:
                raise TrainConfigError(f"invalid train setting {name}={getattr(self, name)!r}")

    def to_dict(self) -> dict[str, Any]:
        d = dataclasses.asdict(self)
        d["crop_ratio"] = list(self.crop_ratio) if self.crop_ratio is not None else None
        return d

    @classmethod
    def from_dict(cls, d: Mapping[str, Any] | None) -> TrainConfig:
        """Build from a (possibly partial) mapping; unknown keys raise `TrainConfigError`."""
        return _from_dict(cls, d or {}, "train")

    def replace(self, **changes: Any) -> TrainConfig:
        """A copy with some fields changed (validated)."""
        return dataclasses.replace(self, **changes)


def _from_dict(cls: type, d: Mapping[str, Any], what: str) -> Any:
    names = {f.name for f in dataclasses.fields(cls)}
    unknown = sorted(str(k) for k in d if k not in names)
    if unknown:
        raise TrainConfigError(f"unknown {what} setting(s): {', '.join(unknown)}")
    return cls(**dict(d))
