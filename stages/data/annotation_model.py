"""The annotation data model every loader builds: `Annotations` (videos + class list, subset lookup with
case-insensitive aliases train/training, val/validation, test/testing, so ``--subset testing`` finds
THUMOS "test" videos), `VideoAnnotation`, the THUMOS-14 exclusion policies, and the validation that all
formats share (`_number`, `_segment`, `_clip`, `_finish`, `load_class_list`), whose errors name the
offending file and item in one line.
"""

from __future__ import annotations

import math
import warnings
from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Any

from stages.errors import StageError

DEFAULT_SUBSET = "all"
THUMOS_AMBIGUOUS = "Ambiguous"
_ALIASES = {"train": "training", "val": "validation", "test": "testing"}

#: THUMOS-14 test videos left out by the usual evaluation protocols.
THUMOS_POLICIES: dict[str, frozenset[str]] = {
    "none": frozenset(),
    # video_test_0001292 has only Ambiguous annotations → 212 test videos (ActionFormer).
    "actionformer": frozenset({"video_test_0001292"}),
    # OpenTAD additionally drops video_test_0000270 → 211 test videos.
    "opentad": frozenset({"video_test_0001292", "video_test_0000270"}),
}


class AnnotationError(StageError):
    """Malformed or inconsistent annotation input (message names file and item)."""


def thumos_exclusions(policy: str) -> frozenset[str]:
    """Video ids excluded from THUMOS-14 evaluation under ``policy`` ("none", "actionformer",
    "opentad")."""
    try:
        return THUMOS_POLICIES[policy]
    except KeyError:
        raise StageError(
            f"unknown exclusion policy {policy!r}; valid: {', '.join(THUMOS_POLICIES)}") from None


def canonical_subset(name: str) -> str:
    """Lower-case subset name with aliases resolved ("val" → "validation")."""
    low = name.strip().lower()
    return _ALIASES.get(low, low)


@dataclass
class VideoAnnotation:
    """One video: subset, duration (s, None if unknown), fps (optional), segments
    ``[(start, end, label)]`` sorted by start, and ambiguous ``[(start, end)]`` spans.

    Item access (``video["segments"]``) mirrors attribute access.
    """

    subset: str
    duration: float | None = None
    fps: float | None = None
    segments: list[tuple[float, float, str]] = field(default_factory=list)
    ambiguous: list[tuple[float, float]] = field(default_factory=list)

    def __getitem__(self, key: str) -> Any:
        if key not in ("subset", "duration", "fps", "segments", "ambiguous"):
            raise KeyError(key)
        return getattr(self, key)

    def get(self, key: str, default: Any = None) -> Any:
        """Mapping-style access with a default."""
        try:
            return self[key]
        except KeyError:
            return default


@dataclass
class Annotations:
    """All videos of a dataset plus the class list (index = position in ``classes``)."""

    videos: dict[str, VideoAnnotation]
    classes: list[str]
    source: str = ""

    @property
    def class_index(self) -> dict[str, int]:
        """``{class name: index}``."""
        return {c: i for i, c in enumerate(self.classes)}

    def subsets(self) -> list[str]:
        """Subset names as they appear in the source, sorted."""
        return sorted({v.subset for v in self.videos.values()})

    def videos_in(self, subset: str | None = None) -> list[str]:
        """Sorted ids of the videos in ``subset`` (None → all). An exact name wins; otherwise the
        match is case-insensitive with aliases. Unknown subset → ValueError listing the known ones."""
        if subset is None:
            return sorted(self.videos)
        exact = sorted(v for v, a in self.videos.items() if a.subset == subset)
        if exact:
            return exact
        want = canonical_subset(subset)
        found = sorted(v for v, a in self.videos.items() if canonical_subset(a.subset) == want)
        if not found:
            raise StageError(f"subset {subset!r} not found in {self.source or 'annotations'}; "
                             f"available: {', '.join(self.subsets()) or '(none)'}")
        return found

    def exclude(self, video_ids: Iterable[str]) -> Annotations:
        """A copy without the given videos (ids not present are ignored)."""
        drop = set(video_ids)
        return replace(self, videos={v: a for v, a in self.videos.items() if v not in drop})

    def ground_truth(self, subset: str | None = None) -> list[dict]:
        """Rows ``{"video", "label", "start", "end"}`` for :func:`losa.metrics.detection.evaluate_detection`."""
        return [{"video": vid, "label": lab, "start": s, "end": e}
                for vid in self.videos_in(subset) for s, e, lab in self.videos[vid].segments]

    def to_activitynet_json(self, version: str = "losa-annotations-1") -> dict:
        """ActivityNet-format dict (with ``classes`` and per-video ``ambiguous`` when present);
        :func:`load_activitynet_json` reads it back unchanged."""
        index = self.class_index
        database: dict[str, dict] = {}
        for vid in sorted(self.videos):
            ann = self.videos[vid]
            entry: dict[str, Any] = {"subset": ann.subset}
            if ann.duration is not None:
                entry["duration"] = ann.duration
            if ann.fps is not None:
                entry["fps"] = ann.fps
            entry["annotations"] = [{"label": lab, "segment": [s, e], "label_id": index[lab]}
                                    for s, e, lab in ann.segments]
            if ann.ambiguous:
                entry["ambiguous"] = [[s, e] for s, e in ann.ambiguous]
            database[vid] = entry
        return {"version": version, "classes": list(self.classes), "database": database}


# ----------------------------------------------------------------------------------- helpers


def load_class_list(path: str | Path) -> list[str]:
    """Class names, one per line (blank lines and surrounding spaces ignored; no duplicates)."""
    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(f"class list not found: {path}")
    names = [line.strip() for line in path.read_text(encoding="utf-8").splitlines()]
    names = [n for n in names if n]
    seen: set[str] = set()
    for n in names:
        if n in seen:
            raise AnnotationError(f"{path}: duplicate class {n!r}")
        seen.add(n)
    if not names:
        raise AnnotationError(f"{path}: class list is empty")
    return names


def _number(value: Any, where: str, what: str, *, optional: bool = False) -> float | None:
    if optional and (value is None or value == ""):
        return None
    if isinstance(value, bool):
        raise AnnotationError(f"{where}: {what} {value!r} is not a number")
    try:
        out = float(value)
    except (TypeError, ValueError):
        raise AnnotationError(f"{where}: {what} {value!r} is not a number") from None
    if not math.isfinite(out):
        raise AnnotationError(f"{where}: {what} {value!r} is not finite")
    return out


def _segment(start: Any, end: Any, where: str, video: str) -> tuple[float, float]:
    """Validated (start, end). A zero-length segment is kept with a warning: the official
    ActivityNet 1.3 file has a few (e.g. [0, 0]) and its evaluator counts them as ground truth."""
    s = _number(start, where, "start")
    e = _number(end, where, "end")
    assert s is not None and e is not None
    if s < 0:
        raise AnnotationError(f"{where}: negative start {s}")
    if e < s:
        raise AnnotationError(f"{where}: end {e} < start {s}")
    if e == s:
        warnings.warn(f"{where}: zero-length segment [{s}, {e}] of video {video} kept (it can "
                      f"never be matched)", stacklevel=3)
    return s, e


def _clip(video: str, seg: tuple[float, float], duration: float | None, where: str
          ) -> tuple[float, float] | None:
    """Clip a segment to [0, duration] with a warning; None (dropped) if it starts past the end."""
    s, e = seg
    if duration is None or e <= duration:
        return seg
    if s >= duration:
        warnings.warn(f"{where}: segment [{s}, {e}] of video {video} starts after its duration "
                      f"{duration}; dropped", stacklevel=3)
        return None
    warnings.warn(f"{where}: segment [{s}, {e}] of video {video} clipped to its duration "
                  f"{duration}", stacklevel=3)
    return s, duration


def _finish(videos: dict[str, VideoAnnotation], classes: Sequence[str] | str | Path | None,
            source: str, declared: list[str]) -> Annotations:
    """Resolve the class list (given > declared by the source > sorted labels), check every label
    against it and sort segments."""
    if classes is not None:
        class_list = load_class_list(classes) if isinstance(classes, (str, Path)) else list(classes)
    elif declared:
        class_list = list(declared)
    else:
        class_list = sorted({lab for a in videos.values() for _, _, lab in a.segments})
    if len(set(class_list)) != len(class_list):
        dup = next(c for c in class_list if class_list.count(c) > 1)
        raise AnnotationError(f"{source}: duplicate class {dup!r} in the class list")
    known = set(class_list)
    for vid in sorted(videos):
        for s, e, lab in videos[vid].segments:
            if lab not in known:
                raise AnnotationError(f"{source}: video {vid} segment [{s}, {e}] has unknown "
                                      f"label {lab!r} (not in the class list)")
    for ann in videos.values():
        ann.segments.sort(key=lambda x: (x[0], x[1], x[2]))
        ann.ambiguous.sort()
    return Annotations(videos=videos, classes=class_list, source=source)
