"""Clip sampling settings (`ClipSampling`): where clips start and which frames they read.

Torch-free (numpy index arithmetic only) so the CLIs can build their options from it quickly; see
`losa.encoder.sampling` for the time convention and the pixel normalisation.
"""
from __future__ import annotations

from dataclasses import asdict
from typing import Any

import numpy as np

from losa.errors import LosaError
from losa.schema import knob, settings

__all__ = ["ClipSampling"]


@settings(what="clip sampling", error=LosaError, frozen=True)
class ClipSampling:
    """Where clips start and which frames they read (pure index arithmetic)."""

    frames_per_clip: int = knob(16, "Frames per clip (multiple of the tubelet size 2).", ge=1, flag="frames")
    frame_step: int = knob(1, "Step between a clip's frames (1: consecutive, VideoMAEv2 TAD features).", ge=1)
    clip_stride: int = knob(4, "Frames between clip starts (one feature step each).", ge=1)

    @classmethod
    def from_dict(cls, d: dict[str, Any]) -> ClipSampling:
        """Inverse of :meth:`to_dict`; unknown keys are an error."""
        unknown = sorted(set(d) - {"frames_per_clip", "frame_step", "clip_stride"})
        if unknown:
            raise LosaError(f"unknown clip sampling key(s): {', '.join(unknown)}")
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
            raise LosaError(f"fps must be a positive number, got {fps!r}")
        starts = self.clip_starts(num_frames).astype(np.float64)
        return (starts + (self.span() - 1) / 2.0 + 0.5) / float(fps)
