"""Sliding-window clip sampling over a video and pixel normalisation.

A video of N frames is cut into clips of ``frames_per_clip`` frames taken every ``frame_step``
frames; consecutive clips start ``clip_stride`` frames apart (one feature step per clip). The time
attached to a step is the centre of its clip in ActionFormer's convention: frame k covers
[k, k+1)/fps, so a clip spanning frames s..s+span-1 is centred at (s + span/2)/fps. For 16-frame
clips with stride 4 this is (4i + 8)/fps, the offset ActionFormer uses for its released features.
"""
from __future__ import annotations

from dataclasses import asdict, dataclass
from typing import Any

import numpy as np
import torch
from torch import Tensor

__all__ = ["IMAGENET_MEAN", "IMAGENET_STD", "NORM_MODES", "ClipSampling", "normalise"]

IMAGENET_MEAN = (0.485, 0.456, 0.406)
IMAGENET_STD = (0.229, 0.224, 0.225)
NORM_MODES = ("imagenet", "255")


@dataclass(frozen=True)
class ClipSampling:
    """Where clips start and which frames they read (pure index arithmetic)."""

    frames_per_clip: int = 16
    frame_step: int = 1
    clip_stride: int = 4

    def __post_init__(self) -> None:
        for field in ("frames_per_clip", "frame_step", "clip_stride"):
            value = getattr(self, field)
            if isinstance(value, bool) or not isinstance(value, (int, np.integer)) or value < 1:
                raise ValueError(f"clip sampling {field} must be a positive int, got {value!r}")
            object.__setattr__(self, field, int(value))

    @classmethod
    def from_dict(cls, d: dict[str, Any]) -> ClipSampling:
        """Inverse of :meth:`to_dict`; unknown keys are an error."""
        unknown = sorted(set(d) - {"frames_per_clip", "frame_step", "clip_stride"})
        if unknown:
            raise ValueError(f"unknown clip sampling key(s): {', '.join(unknown)}")
        return cls(**d)

    def to_dict(self) -> dict[str, int]:
        return asdict(self)

    def span(self) -> int:
        """Frames covered by one clip, first to last inclusive."""
        return (self.frames_per_clip - 1) * self.frame_step + 1

    @staticmethod
    def _check_frames(num_frames: int) -> int:
        if isinstance(num_frames, bool) or not isinstance(num_frames, (int, np.integer)) or num_frames < 1:
            raise ValueError(f"video must have at least one frame, got num_frames={num_frames!r}")
        return int(num_frames)

    def num_clips(self, num_frames: int) -> int:
        """Number of clips (= feature steps) for a video of ``num_frames`` frames (at least 1)."""
        n = self._check_frames(num_frames)
        return max(0, (n - self.span()) // self.clip_stride) + 1

    def clip_starts(self, num_frames: int) -> np.ndarray:
        """First frame of every clip: 0, stride, 2*stride, ... while start + span <= N.

        A video shorter than one span still yields one clip starting at 0.
        """
        return np.arange(self.num_clips(num_frames), dtype=np.int64) * self.clip_stride

    def frame_indices(self, num_frames: int) -> np.ndarray:
        """Frame index table ``[num_clips, frames_per_clip]``, clamped to ``num_frames - 1``."""
        starts = self.clip_starts(num_frames)
        offsets = np.arange(self.frames_per_clip, dtype=np.int64) * self.frame_step
        return np.minimum(starts[:, None] + offsets[None, :], int(num_frames) - 1)

    def centre_times(self, num_frames: int, fps: float) -> np.ndarray:
        """Centre time in seconds of every clip: ``(start + (span - 1)/2 + 0.5) / fps``."""
        if not np.isfinite(fps) or fps <= 0:
            raise ValueError(f"fps must be a positive number, got {fps!r}")
        starts = self.clip_starts(num_frames).astype(np.float64)
        return (starts + (self.span() - 1) / 2.0 + 0.5) / float(fps)


def normalise(frames_uint8: Tensor, mode: str, dtype: torch.dtype = torch.float32) -> Tensor:
    """uint8 frames ``[..., T, H, W, 3]`` → float ``[..., 3, T, H, W]``.

    ``mode="imagenet"``: /255 then ImageNet mean/std (VideoMAEv2 fine-tuning recipe);
    ``mode="255"``: /255 only (the released VideoMAEv2 THUMOS features).
    """
    if mode not in NORM_MODES:
        raise ValueError(f"normalisation mode {mode!r} is not one of {', '.join(NORM_MODES)}")
    x = frames_uint8
    if x.dtype != torch.uint8:
        raise ValueError(f"expected uint8 frames, got dtype {x.dtype}")
    if x.ndim < 4 or x.shape[-1] != 3:
        raise ValueError(f"expected frames [..., T, H, W, 3], got shape {tuple(x.shape)}")
    x = x.to(dtype=torch.float32).div_(255.0)
    if mode == "imagenet":
        mean = torch.tensor(IMAGENET_MEAN, dtype=torch.float32, device=x.device)
        std = torch.tensor(IMAGENET_STD, dtype=torch.float32, device=x.device)
        x = x.sub_(mean).div_(std)
    x = x.movedim(-1, -4)                              # [..., 3, T, H, W]
    return x.to(dtype=dtype).contiguous()
