"""Fixed-length resampling of a video's stored steps (ActivityNet protocol, ``resample_steps``).

Features: every video's ``T`` steps become ``N`` by linear interpolation along time,
``torch.nn.functional.interpolate(mode="linear", align_corners=False)`` — what ActionFormer
(``force_upsampling``) and OpenTAD do. Output step ``i`` samples input coordinate
``x_i = (i + 0.5) * T / N - 0.5`` (clamped to ``[0, T - 1]`` by the interpolation).

Step times follow the same map, so the resampled geometry is again affine:
``t'_i = t_0 + x_i * dt``, i.e. ``dt' = dt * T / N`` and ``t'_0 = t_0 + (0.5 * T / N - 0.5) * dt``.
For clips as long as their stride (ActionFormer's ActivityNet TSP features: 16 frames every 16)
this equals ActionFormer's ``feat_stride = ((T - 1) * stride + num_frames) / N`` with offset 0.5;
for overlapping clips it is the time at which the interpolated feature is actually sampled
(ActionFormer's span formula is then off by up to ``(num_frames - stride) / 2`` frames).
Predictions map back to seconds with the resampled geometry.
"""

from __future__ import annotations

from dataclasses import replace
from typing import Any

import numpy as np
import torch
from stages.errors import StageError
import torch.nn.functional as F

__all__ = ["resample_features", "resampled_geometry"]


def resample_features(x: np.ndarray, num_steps: int) -> np.ndarray:
    """``[T, ...]`` → ``[num_steps, ...]`` float32 by linear interpolation over the first axis."""
    if num_steps < 1:
        raise StageError(f"resample_steps must be >= 1, got {num_steps}")
    arr = np.asarray(x, dtype=np.float32)
    if arr.shape[0] == num_steps:
        return np.ascontiguousarray(arr)
    if arr.shape[0] == 0:
        raise StageError("cannot resample a video without steps")
    flat = torch.from_numpy(np.ascontiguousarray(arr.reshape(arr.shape[0], -1).T))[None]  # [1, D, T]
    out = F.interpolate(flat, size=int(num_steps), mode="linear", align_corners=False)[0]
    return np.ascontiguousarray(out.T.numpy().reshape((int(num_steps),) + arr.shape[1:]))


def resampled_geometry(geo: Any, num_steps: int) -> Any:
    """The `stages.data.dataset.StepGeometry` ``geo`` of a video after resampling to
    ``num_steps`` steps (module docstring)."""
    if num_steps < 1:
        raise StageError(f"resample_steps must be >= 1, got {num_steps}")
    ratio = geo.num_steps / float(num_steps)
    return replace(geo, t0=geo.t0 + (0.5 * ratio - 0.5) * geo.dt, dt=geo.dt * ratio,
                   num_steps=int(num_steps))
