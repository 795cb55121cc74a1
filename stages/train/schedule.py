"""How the weights move during training, apart from the optimiser itself: the per-iteration learning-rate
factor (`WarmupCosine`: linear warm-up, then cosine or constant decay to a floor) and the model EMA
whose weights are the ones evaluated and exported (`make_ema`, timm's ``ModelEmaV3``), and whether
AdamW can run as one fused kernel on this device (`fused_adamw`).
"""
from __future__ import annotations

import math
from typing import Any

import torch


def fused_adamw(wanted: bool, device: torch.device) -> bool:
    """Whether AdamW runs fused here: CUDA, or CPU with torch >= 2.4 (older ones: the loop)."""
    return wanted and (device.type == "cuda" or (device.type == "cpu" and torch.__version__ >= (2, 4)))


def make_ema(model: torch.nn.Module, decay: float) -> Any:
    """timm's model EMA (`ModelEmaV3`, fixed decay): float parameters and buffers lerp towards the
    model, other buffers are copied; ``.module`` holds the averaged model, ``.update(model)`` steps it."""
    from timm.utils import ModelEmaV3

    ema = ModelEmaV3(model, decay=float(decay))
    ema.module.requires_grad_(False)
    return ema


class WarmupCosine:
    """LR factor per iteration: linear warm-up to 1, then cosine (or constant) down to ``floor``.

    Kept instead of timm's CosineLRScheduler: timm's warm-up starts at ``warmup_lr_init`` and reaches
    the base lr one iteration later ((it+1)/W here), so it cannot reproduce this schedule exactly."""

    def __init__(self, warmup: int, total: int, schedule: str = "cosine", floor: float = 0.0) -> None:
        self.warmup, self.total, self.schedule, self.floor = int(warmup), int(total), schedule, float(floor)

    def __call__(self, it: int) -> float:
        if it < self.warmup:
            return (it + 1) / self.warmup
        if self.schedule == "constant" or self.total <= self.warmup:
            return 1.0
        progress = min(1.0, (it - self.warmup) / (self.total - self.warmup))
        return self.floor + (1.0 - self.floor) * 0.5 * (1.0 + math.cos(math.pi * progress))
