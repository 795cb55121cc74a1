"""Sliding-window clip sampling over a video and pixel normalisation.

A video of N frames is cut into clips of ``frames_per_clip`` frames taken every ``frame_step``
frames; consecutive clips start ``clip_stride`` frames apart (one feature step per clip). The time
attached to a step is the centre of its clip in ActionFormer's convention: frame k covers
[k, k+1)/fps, so a clip spanning frames s..s+span-1 is centred at (s + span/2)/fps. For 16-frame
clips with stride 4 this is (4i + 8)/fps, the offset ActionFormer uses for its released features.
"""
from __future__ import annotations

import torch
from torch import Tensor
from losa.errors import LosaError

from losa.encoder.clips import ClipSampling  # noqa: F401  (defined there, torch-free)

__all__ = ["IMAGENET_MEAN", "IMAGENET_STD", "NORM_MODES", "ClipSampling", "input_affine", "normalise"]

IMAGENET_MEAN = (0.485, 0.456, 0.406)
IMAGENET_STD = (0.229, 0.224, 0.225)
NORM_MODES = ("imagenet", "255")


def input_affine(mode: str) -> tuple[tuple[float, ...], tuple[float, ...]]:
    """Per-channel ``(scale, shift)`` with ``normalise(x) = scale * x + shift`` on 0..255 pixels:
    ``"imagenet"``: ``1 / (255 std)``, ``-mean / std``; ``"255"``: ``1/255``, 0."""
    if mode not in NORM_MODES:
        raise LosaError(f"normalisation mode {mode!r} is not one of {', '.join(NORM_MODES)}")
    if mode == "imagenet":
        return (tuple(1.0 / (255.0 * s) for s in IMAGENET_STD),
                tuple(-m / s for m, s in zip(IMAGENET_MEAN, IMAGENET_STD)))
    return (1.0 / 255.0,) * 3, (0.0,) * 3


def normalise(frames_uint8: Tensor, mode: str, dtype: torch.dtype = torch.float32) -> Tensor:
    """uint8 frames ``[..., T, H, W, 3]`` → float ``[..., 3, T, H, W]``.

    ``mode="imagenet"``: /255 then ImageNet mean/std (VideoMAEv2 fine-tuning recipe);
    ``mode="255"``: /255 only (the released VideoMAEv2 THUMOS features).  One pass over the float
    output: the layout change is done on the uint8 values, then one multiply-add (`input_affine`).
    """
    scale, shift = input_affine(mode)
    x = frames_uint8
    if x.dtype != torch.uint8:
        raise ValueError(f"expected uint8 frames, got dtype {x.dtype}")
    if x.ndim < 4 or x.shape[-1] != 3:
        raise ValueError(f"expected frames [..., T, H, W, 3], got shape {tuple(x.shape)}")
    x = x.movedim(-1, -4).contiguous()                 # [..., 3, T, H, W], still 1 byte a value
    s = torch.tensor(scale, dtype=torch.float32, device=x.device).view(3, 1, 1, 1)
    b = torch.tensor(shift, dtype=torch.float32, device=x.device).view(3, 1, 1, 1)
    y = torch.addcmul(b, x, s)
    return y if dtype == torch.float32 else y.to(dtype)
