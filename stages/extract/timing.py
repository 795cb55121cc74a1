"""Step times of a video: the centre of each clip, in seconds.

Constant frame rate (almost every file): ``(start + span/2) / fps`` — the midpoint between the
start of the clip's first frame and the start of the frame after it, i.e. the recorded formula
``(start + (span - 1)/2 + 0.5) / fps``.  Variable frame rate (phone recordings, screen captures,
some web videos): frame index / average fps can be off by far more than a frame, so the same
midpoint is taken on the decoder's presentation timestamps instead.  The frame-rate formula is
kept whenever it agrees with the timestamps to within half a frame, so constant-rate stores are
unchanged.  A clip of a video shorter than its span covers only the frames that exist (its last
frames repeat the final one), so its time lies inside the video.  The choice is recorded in the
video's attrs as ``timing``: ``"fps"`` or ``"pts"``.
"""

from __future__ import annotations

import os
from dataclasses import dataclass
from pathlib import Path

import numpy as np

__all__ = ["StepTimes", "frame_start_times", "step_times"]


@dataclass(frozen=True)
class StepTimes:
    """Times of every step, how they were derived, and the video duration they imply."""

    times: np.ndarray       # float64 [num_steps], strictly increasing
    timing: str             # "fps" (frame index / fps) or "pts" (presentation timestamps)
    duration: float         # seconds
    max_fps_error: float    # largest |fps-formula time - timestamp time| seen (0 without timestamps)


def frame_start_times(path: str | os.PathLike, num_frames: int) -> np.ndarray | None:
    """Presentation time (s) of every frame's start, relative to the first frame; None when the
    decoder reports no usable timestamps (non-finite or not increasing)."""
    try:
        import decord
    except ImportError:  # pragma: no cover - PyAV installs: frame-rate timing only
        return None
    try:
        vr = decord.VideoReader(str(Path(path)), ctx=decord.cpu(0), num_threads=1)
        ts = np.asarray(vr.get_frame_timestamp(list(range(min(num_frames, len(vr))))), dtype=np.float64)
    except Exception:
        return None
    if ts.ndim != 2 or len(ts) != num_frames or not np.isfinite(ts).all():
        return None
    start = ts[:, 0] - ts[0, 0]
    if num_frames > 1 and not (np.diff(start) > 0).all():
        return None
    return start


def step_times(starts: np.ndarray, span: int, num_frames: int, fps: float,
               frame_times: np.ndarray | None) -> StepTimes:
    """Centre time of the clips starting at frame indices `starts` (each `span` frames long)."""
    starts = np.asarray(starts, dtype=np.int64)
    covered = np.minimum(span, num_frames - starts)               # frames a clip really has
    by_fps = (starts + covered / 2.0) / float(fps)
    duration = num_frames / float(fps)
    if frame_times is None or num_frames < 2:
        return StepTimes(by_fps, "fps", duration, 0.0)
    last = frame_times[-1] - frame_times[-2]                     # duration of the final frame
    after = np.append(frame_times[1:], frame_times[-1] + last)   # start of the next frame
    by_pts = (frame_times[starts] + after[starts + covered - 1]) / 2.0
    error = float(np.max(np.abs(by_pts - by_fps)))
    if error <= 0.5 / float(fps):                                 # constant rate: keep the formula
        return StepTimes(by_fps, "fps", duration, error)
    return StepTimes(by_pts, "pts", float(after[-1]), error)
