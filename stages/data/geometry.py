"""Seconds ↔ step coordinates of one stored video. ``times[i]`` (recorded by the store, never derived
by users) is the centre time in seconds of step ``i``; an annotation ``(s, e)`` maps to float step
coordinates ``((s - times[0]) / dt, (e - times[0]) / dt)`` — step ``i`` sits at coordinate ``i``, what
ActionFormer's loaders compute from ``feat_stride`` / ``num_frames`` — and `StepGeometry.to_seconds`
turns predictions back into seconds; variable-frame-rate videos map piecewise linearly.
"""
from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import numpy as np

from stages.errors import StageError


@dataclass(frozen=True)
class StepGeometry:
    """Map between seconds and step coordinates of one video: affine (``t0 + i * dt``), or, for
    a variable-frame-rate video whose stored step times are not evenly spaced, piecewise linear
    through those times (``times``; extrapolated with ``dt`` beyond the ends)."""

    t0: float  # centre time (s) of step 0
    dt: float  # seconds between consecutive steps (mean spacing)
    num_steps: int
    times: tuple[float, ...] | None = None  # uneven step times (VFR); None = affine

    def _knots(self) -> np.ndarray | None:
        if self.times is None or len(self.times) != self.num_steps or self.num_steps < 2:
            return None  # e.g. a resampled copy: the affine map of the mean spacing
        return np.asarray(self.times, dtype=np.float64)

    def to_steps(self, seconds: Any) -> np.ndarray:
        x = np.asarray(seconds, dtype=np.float64)
        knots = self._knots()
        if knots is None:
            return (x - self.t0) / self.dt
        idx = np.interp(x, knots, np.arange(self.num_steps, dtype=np.float64))
        below, above = x < knots[0], x > knots[-1]
        idx = np.where(below, (x - knots[0]) / self.dt, idx)
        return np.where(above, self.num_steps - 1 + (x - knots[-1]) / self.dt, idx)

    def to_seconds(self, steps: Any) -> np.ndarray:
        i = np.asarray(steps, dtype=np.float64)
        knots = self._knots()
        if knots is None:
            return self.t0 + i * self.dt
        t = np.interp(i, np.arange(self.num_steps, dtype=np.float64), knots)
        t = np.where(i < 0, knots[0] + i * self.dt, t)
        return np.where(i > self.num_steps - 1, knots[-1] + (i - self.num_steps + 1) * self.dt, t)


def step_geometry(times: np.ndarray, video_id: str = "?", fallback_dt: float | None = None) -> StepGeometry:
    """Geometry from a store's ``times`` array (mean spacing; must be strictly increasing)."""
    t = np.asarray(times, dtype=np.float64).reshape(-1)
    if t.size == 0:
        raise StageError(f"video {video_id!r} has no steps in the store")
    if t.size == 1:
        dt = float(fallback_dt) if fallback_dt and fallback_dt > 0 else 1.0
        return StepGeometry(float(t[0]), dt, 1)
    if not np.all(np.diff(t) > 0):
        raise StageError(f"video {video_id!r}: step times are not strictly increasing")
    dt = float((t[-1] - t[0]) / (t.size - 1))
    even = np.abs(t - (t[0] + dt * np.arange(t.size))).max() <= 1e-6 * max(1.0, abs(float(t[-1])))
    return StepGeometry(float(t[0]), dt, int(t.size), None if even else tuple(map(float, t)))

