"""Annotated videos as the datasets see them: `build_records` selects a subset's videos, checks that
the store holds them, maps each one's segments to step coordinates with its stored step times
(`stages.data.geometry`) and class names to indices, giving one `VideoRecord` per video.
"""
from __future__ import annotations

import warnings
from dataclasses import dataclass
from typing import Any, Mapping, Sequence

import numpy as np

from stages.data.geometry import StepGeometry, step_geometry
from stages.data.resample import resampled_geometry
from stages.errors import StageError

#: The single class of a class-agnostic detector (``class_agnostic=True``).
AGNOSTIC_CLASS = "action"


class MissingVideosError(StageError):
    """Annotated videos that the activation store does not contain."""


@dataclass
class VideoRecord:
    """One annotated video as the datasets see it (segments already in step coordinates)."""

    video_id: str
    geometry: StepGeometry
    duration: float
    segments: np.ndarray  # [M, 2] float32, step coordinates
    labels: np.ndarray  # [M] int64 class indices

    @property
    def num_steps(self) -> int:
        return self.geometry.num_steps


def label_index(label: Any, classes: Sequence[str]) -> int:
    """Class index of an annotation label (a class name or an integer index)."""
    if isinstance(label, (int, np.integer)) and not isinstance(label, bool):
        if not 0 <= int(label) < len(classes):
            raise ValueError(f"label index {label} out of range 0..{len(classes) - 1}")
        return int(label)
    try:
        return list(classes).index(str(label))
    except ValueError:
        raise StageError(f"label {label!r} is not in the class list") from None


def _ann_field(entry: Any, name: str, default: Any = None) -> Any:
    if isinstance(entry, Mapping):
        return entry.get(name, default)
    return getattr(entry, name, default)


def select_videos(annotations: Any, subset: str | Sequence[str] | None) -> list[str]:
    """Ids of annotated videos whose subset matches (``None``: all), sorted."""
    if hasattr(annotations, "videos_in"):  # stages.data.annotations.Annotations: aliases, clear errors
        names = [subset] if subset is None or isinstance(subset, str) else list(subset)
        return sorted({v for name in names for v in annotations.videos_in(name)})
    wanted = None if subset is None else ({subset} if isinstance(subset, str) else set(subset))
    ids = [
        vid
        for vid, entry in annotations.videos.items()
        if wanted is None or _ann_field(entry, "subset") in wanted
    ]
    if wanted is not None and not ids:
        raise StageError(f"no annotated videos in subset {sorted(wanted)}")
    return sorted(ids)


def build_records(
    reader: Any,
    annotations: Any,
    video_ids: Sequence[str],
    allow_missing: bool = False,
    resample_steps: int = 0,
) -> list[VideoRecord]:
    """Map annotations to step coordinates using each video's stored step times (with
    ``resample_steps > 0``: the times after resampling every video to that many steps)."""
    stored = set(reader.videos())
    missing = [v for v in video_ids if v not in stored]
    if missing:
        shown = ", ".join(missing[:10]) + (f", ... ({len(missing)} in all)" if len(missing) > 10 else "")
        msg = f"{len(missing)} annotated video(s) missing from the store: {shown}"
        if not allow_missing:
            raise MissingVideosError(msg)
        warnings.warn(msg + " (skipped)", stacklevel=2)
    classes = list(annotations.classes)
    records = []
    for vid in video_ids:
        if vid not in stored:
            continue
        info = reader.video_info(vid)
        entry = annotations.videos[vid]
        duration = _ann_field(entry, "duration") or info.get("duration") or 0.0
        geo = step_geometry(reader.times(vid), vid, fallback_dt=info.get("duration"))
        if resample_steps:
            geo = resampled_geometry(geo, resample_steps)
        segs = _ann_field(entry, "segments") or []
        sec = np.asarray([[float(s), float(e)] for s, e, _ in segs], dtype=np.float64).reshape(-1, 2)
        labels = np.asarray([label_index(lab, classes) for _, _, lab in segs], dtype=np.int64)
        steps = geo.to_steps(sec)
        if duration and float(duration) > 0 and len(steps):  # clip to the video's time span
            steps = np.clip(steps, geo.to_steps(0.0), geo.to_steps(float(duration)))
        keep = steps[:, 1] > steps[:, 0]
        records.append(
            VideoRecord(vid, geo, float(duration), steps[keep].astype(np.float32), labels[keep])
        )
    return records

