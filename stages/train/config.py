"""Training hyper-parameters (`TrainConfig`) and the post-processing (NMS) settings used at eval time.

Defaults follow the ActionFormer THUMOS-14 recipe (AdamW, linear warm-up then cosine decay applied per
iteration, gradient clipping at 1.0, model EMA with decay 0.999 whose weights are the ones evaluated),
scaled to the LoSA setting (lr 1e-4, batch 2, 30 epochs).
"""
from __future__ import annotations

import dataclasses
from typing import Any, Literal, get_args

from losa.schema import knob, settings
from stages.errors import StageError

class TrainConfigError(StageError):
    """An invalid or unknown training setting."""


@settings(what="nms", error=TrainConfigError)
class NMSConfig:
    """Soft-NMS / post-processing settings (ActionFormer names and THUMOS defaults)."""

    method: Literal["gaussian", "linear", "hard", "none"] = knob("gaussian", "Soft-NMS score decay (none: keep all).")
    iou_threshold: float = knob(0.1, "IoU above which linear/hard NMS suppresses.", ge=0, le=1)
    sigma: float = knob(0.5, "Width of the Gaussian Soft-NMS decay.", gt=0)
    min_score: float = knob(1e-3, "Drop detections scoring below this after NMS.", ge=0, le=1)
    max_seg_num: int = knob(200, "Detections kept per video.", ge=1)
    voting_thresh: float = knob(0.7, "Score-voting IoU threshold (0 disables voting).", ge=0, le=1)
    pre_nms_topk: int = knob(2000, "Candidates per video entering NMS.", ge=1)
    pre_nms_thresh: float = knob(1e-3, "Drop candidates scoring below this before NMS.", ge=0, le=1)
    duration_thresh: float = knob(0.05, "Drop segments shorter than this (steps).", ge=0)
    multiclass: bool = knob(True, "Run NMS per class (else across classes).")


@settings(what="train", error=TrainConfigError)
class TrainConfig:
    """Everything that controls the optimisation loop (the model has its own `LoSAConfig`)."""

    epochs: int = knob(30, "Training epochs.", ge=1)
    batch_size: int = knob(2, "Videos per optimisation step.", ge=1)
    lr: float = knob(1e-4, "Peak AdamW learning rate.", gt=0)
    weight_decay: float = knob(0.05, "AdamW weight decay (weights of Linear/Conv layers only).", ge=0)
    adapter_lr_scale: float = knob(
        1.0, "Learning rate of the adapters and the fusion (everything outside the ActionFormer head) as a "
             "multiple of lr; the warm-up and cosine apply to both (AdaTAD trains its side adapters at 2x).",
        gt=0)
    fused_optimizer: bool = knob(
        True, "AdamW as PyTorch's fused kernel (one call per step; torch >= 2.4 on CPU, any on CUDA); false: "
              "the per-parameter loop ActionFormer runs. Same update up to float rounding.")
    warmup_epochs: int = knob(5, "Linear warm-up epochs.", ge=0)
    schedule: Literal["cosine", "constant"] = knob("cosine", "Learning-rate schedule after the warm-up.")
    min_lr_ratio: float = knob(0.0, "Cosine floor as a fraction of lr.", ge=0, le=1)
    clip_grad: float = knob(1.0, "Gradient-norm clipping (<= 0 disables).")
    ema_decay: float = knob(0.999, "Decay of the model EMA whose weights are evaluated (0 disables).", ge=0, lt=1)
    amp: Literal["auto", "off", "bf16", "fp16"] = knob("auto", "Autocast: auto = bf16 on CUDA, fp32 on CPU.")
    seed: int = knob(2025, "Seed of weights, crops and data order.")
    holdout: float = knob(0.0, "Leave this seeded fraction of the training subset's videos out of "
                               "training (score choices on it: losa-eval --run RUN --holdout; "
                               "losa-probe --holdout); 0: train on all.", ge=0, lt=1)
    holdout_seed: int = knob(0, "Seed of the held-out split (the same in training, probes, evaluation).")
    num_workers: int = knob(0, "DataLoader worker processes.", ge=0)
    max_seq_len: int = knob(2304, "Training window in steps (longer videos are randomly cropped).", ge=1)
    trunc_thresh: float = knob(0.5, "Keep an action cut by a crop if this fraction of it remains.", ge=0, le=1)
    crop_ratio: tuple[float, float] | None = knob((0.9, 1.0), "Random crop length range as a fraction of "
                                                              "max_seq_len, e.g. 0.9,1.0 (none: no jitter).")
    eval_every: int = knob(0, "Validate every N epochs (0: only at the end; needs a validation subset).", ge=0)
    eval_batch_size: int = knob(4, "Videos per batch when validating.", ge=1)
    checkpoint_every: int = knob(5, "Write the resumable checkpoint every N epochs (and always after the last).",
                                 ge=1)
    eval_tious: str = knob("0.3:0.1:0.7", "tIoU thresholds of the validation mAP (start:step:stop or a list).")
    cache_features: Literal["auto", True, False] = knob("auto", "Keep every video's features in RAM after the first "
                                                          "read (auto: when they fit in cache_max_mb).")
    cache_max_mb: float = knob(2048.0, "Largest store (float32 MiB of the layers read) cached by "
                                       "cache_features=auto.", ge=0)
    resample_steps: int = knob(0, "ActivityNet protocol: resample every video to this many steps (0: native).",
                               ge=0)
    class_agnostic: bool = knob(False, "Train one 'action' class; label detections with external video-level "
                                       "scores at prediction.")
    device: str = knob("auto", "auto, cpu, cuda or cuda:N.")
    nms: NMSConfig = knob(default_factory=NMSConfig, help="Post-processing (Soft-NMS) settings.")

    def __post_init__(self) -> None:
        self.validate()

    def validate(self) -> None:
        """Cross-field rules (each field's own type and range are checked by the schema)."""
        if self.crop_ratio is not None:
            lo, hi = self.crop_ratio
            if not 0.0 < lo <= hi <= 1.0:
                raise TrainConfigError(f"invalid train setting crop_ratio={self.crop_ratio!r} (need 0 < lo <= hi <= 1)")

    def replace(self, **changes: Any) -> TrainConfig:
        """A copy with some fields changed (validated)."""
        return dataclasses.replace(self, **changes)


AMP_CHOICES: tuple[str, ...] = get_args(TrainConfig.__pydantic_fields__["amp"].annotation)
