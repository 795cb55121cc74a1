"""Temporal action annotations: one `Annotations` object from ActivityNet JSON, THUMOS-14 txt
folders or CSV, with validation that names the offending file and item in one line.

Formats
-------
* ActivityNet JSON: ``{"database": {vid: {"subset", "duration"?, "fps"?,
  "annotations": [{"label", "segment": [s, e]}]}}}``. An optional top-level ``"classes"`` list
  (written by :meth:`Annotations.to_activitynet_json`) fixes the class order, and an optional
  per-video ``"ambiguous": [[s, e], ...]`` is kept apart.
* THUMOS-14 folder: per-class files ``<Class>_<split>.txt`` with lines ``video start end``
  (whitespace separated); ``Ambiguous_<split>.txt`` goes to ``ambiguous`` (not a class); the subset
  is the split from the file name ("val"/"test"). Durations are unknown (None).
* CSV with header ``video,start,end,label[,subset][,duration][,fps]``. A row with empty
  start/end/label declares a video without actions. Without a subset column every video is in
  subset ``"all"``.

Every format: negative start or end < start is an error; a zero-length segment is kept with a
warning (the official ActivityNet evaluator counts it as ground truth); with a known duration,
segments reaching past it are clipped (warning) and ones starting after it dropped (warning).

Subset names match case-insensitively and with the aliases train/training, val/validation,
test/testing, so ``--subset testing`` finds THUMOS "test" videos.
"""

from __future__ import annotations

import csv
import json
import math
import re
import warnings
from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Any
from stages.errors import StageError

DEFAULT_SUBSET = "all"
THUMOS_AMBIGUOUS = "Ambiguous"
_ALIASES = {"train": "training", "val": "validation", "test": "testing"}
_THUMOS_FILE = re.compile(r"^(?P<cls>.+)_(?P<split>[A-Za-z0-9]+)\.txt$")
_CSV_REQUIRED = ("video", "start", "end", "label")
_CSV_OPTIONAL = ("subset", "duration", "fps")

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


# ----------------------------------------------------------------------------------- loaders


def load_activitynet_json(path: str | Path, classes: Sequence[str] | str | Path | None = None
                          ) -> Annotations:
    """Load an ActivityNet-format JSON file (see module docstring)."""
    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(f"annotation file not found: {path}")
    def no_duplicates(pairs: list[tuple[str, Any]]) -> dict:
        out = dict(pairs)
        if len(out) != len(pairs):
            seen: set[str] = set()
            dup = next(k for k, _ in pairs if k in seen or seen.add(k))
            raise AnnotationError(f"{path}: duplicate key {dup!r} in a JSON object")
        return out

    try:
        data = json.loads(path.read_text(encoding="utf-8"), object_pairs_hook=no_duplicates)
    except (json.JSONDecodeError, UnicodeDecodeError) as err:
        raise AnnotationError(f"{path}: not valid JSON ({err})") from None
    if not isinstance(data, dict) or not isinstance(data.get("database"), dict):
        raise AnnotationError(f"{path}: missing top-level object 'database'")
    videos: dict[str, VideoAnnotation] = {}
    for vid, entry in data["database"].items():
        where = f"{path}: video {vid}"
        if not isinstance(entry, dict):
            raise AnnotationError(f"{where}: entry is not an object")
        for key in ("subset", "annotations"):
            if key not in entry:
                raise AnnotationError(f"{where}: missing field {key!r}")
        if not isinstance(entry["subset"], str) or not entry["subset"]:
            raise AnnotationError(f"{where}: subset {entry['subset']!r} is not a non-empty string")
        duration = _number(entry.get("duration"), where, "duration", optional=True)
        if duration is not None and duration <= 0:
            raise AnnotationError(f"{where}: duration {duration} is not positive")
        fps = _number(entry.get("fps"), where, "fps", optional=True)
        if fps is not None and fps <= 0:
            raise AnnotationError(f"{where}: fps {fps} is not positive")
        if not isinstance(entry["annotations"], list):
            raise AnnotationError(f"{where}: 'annotations' is not a list")
        ann = VideoAnnotation(subset=entry["subset"], duration=duration, fps=fps)
        for j, item in enumerate(entry["annotations"]):
            w = f"{where} annotation #{j}"
            if not isinstance(item, dict):
                raise AnnotationError(f"{w}: not an object")
            for key in ("label", "segment"):
                if key not in item:
                    raise AnnotationError(f"{w}: missing field {key!r}")
            if not isinstance(item["label"], str) or not item["label"].strip():
                raise AnnotationError(f"{w}: label {item['label']!r} is not a non-empty string")
            seg = item["segment"]
            if not isinstance(seg, (list, tuple)) or len(seg) != 2:
                raise AnnotationError(f"{w}: segment {seg!r} is not [start, end]")
            clipped = _clip(vid, _segment(seg[0], seg[1], w, vid), duration, f"{path}: annotation #{j}")
            if clipped is not None:
                ann.segments.append((clipped[0], clipped[1], item["label"].strip()))
        for j, seg in enumerate(entry.get("ambiguous", [])):
            w = f"{where} ambiguous #{j}"
            if not isinstance(seg, (list, tuple)) or len(seg) != 2:
                raise AnnotationError(f"{w}: segment {seg!r} is not [start, end]")
            ann.ambiguous.append(_segment(seg[0], seg[1], w, vid))
        videos[str(vid)] = ann
    declared = data.get("classes")
    if declared is not None and not (isinstance(declared, list)
                                     and all(isinstance(c, str) for c in declared)):
        raise AnnotationError(f"{path}: 'classes' is not a list of strings")
    return _finish(videos, classes, str(path), declared or [])


def load_thumos_folder(path: str | Path, classes: Sequence[str] | str | Path | None = None,
                       *, allow_partial_classes: bool = False) -> Annotations:
    """Load a THUMOS-14 annotation folder of ``<Class>_<split>.txt`` files.

    When the folder holds several splits, every class must have a file for each of them: a class
    file of one split only is almost always a typo (``Pluse_val.txt``) and is refused in one line
    unless ``allow_partial_classes``."""
    path = Path(path)
    if not path.is_dir():
        raise FileNotFoundError(f"annotation folder not found: {path}")
    files = sorted(p for p in path.iterdir() if p.is_file() and p.suffix == ".txt")
    if not files:
        raise AnnotationError(f"{path}: no <Class>_<split>.txt files")
    videos: dict[str, VideoAnnotation] = {}
    file_classes: list[str] = []
    class_splits: dict[str, dict[str, Path]] = {}
    for file in files:
        m = _THUMOS_FILE.match(file.name)
        if m is None:
            raise AnnotationError(f"{file}: name is not <Class>_<split>.txt")
        cls, split = m.group("cls"), m.group("split")
        if cls != THUMOS_AMBIGUOUS and cls not in file_classes:
            file_classes.append(cls)
        if cls != THUMOS_AMBIGUOUS:
            class_splits.setdefault(cls, {})[split] = file
        for lineno, line in enumerate(file.read_text(encoding="utf-8").splitlines(), 1):
            parts = line.split()
            if not parts:
                continue
            where = f"{file}:{lineno}"
            if len(parts) != 3:
                raise AnnotationError(f"{where}: expected 'video start end', got {line.strip()!r}")
            vid = parts[0]
            seg = _segment(parts[1], parts[2], where, vid)
            ann = videos.setdefault(vid, VideoAnnotation(subset=split))
            if ann.subset != split:
                raise AnnotationError(f"{where}: video {vid} is in split {split!r} here but "
                                      f"{ann.subset!r} elsewhere")
            if cls == THUMOS_AMBIGUOUS:
                ann.ambiguous.append(seg)
            else:
                ann.segments.append((seg[0], seg[1], cls))
    splits = sorted({sp for per in class_splits.values() for sp in per})
    partial = {c: per for c, per in sorted(class_splits.items()) if len(per) < len(splits)}
    if partial and not allow_partial_classes:
        shown = "; ".join(f"{next(iter(per.values())).name} has no {', '.join(sorted(set(splits) - set(per)))} "
                          "counterpart" for per in list(partial.values())[:4])
        raise AnnotationError(f"{path}: {len(partial)} class(es) lack a file for some split ({shown}); "
                              "a typo in a file name? Rename it, or pass --allow-partial-classes")
    return _finish(videos, classes, str(path), sorted(file_classes))


def load_csv(path: str | Path, classes: Sequence[str] | str | Path | None = None) -> Annotations:
    """Load a CSV with header ``video,start,end,label[,subset][,duration][,fps]``."""
    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(f"annotation file not found: {path}")
    with path.open(newline="", encoding="utf-8") as fh:
        reader = csv.DictReader(fh)
        header = [h.strip() for h in (reader.fieldnames or [])]
        missing = [c for c in _CSV_REQUIRED if c not in header]
        if missing:
            raise AnnotationError(f"{path}: header is missing column(s) {', '.join(missing)} "
                                  f"(expected video,start,end,label[,subset])")
        unknown = [c for c in header if c not in _CSV_REQUIRED + _CSV_OPTIONAL]
        if unknown:
            raise AnnotationError(f"{path}: unknown column(s) {', '.join(unknown)}")
        reader.fieldnames = header
        rows = list(reader)
    videos: dict[str, VideoAnnotation] = {}
    for lineno, row in enumerate(rows, 2):
        where = f"{path}:{lineno}"
        if None in row or any(row.get(c) is None for c in header):
            raise AnnotationError(f"{where}: expected {len(header)} columns")
        vid = row["video"].strip()
        if not vid:
            raise AnnotationError(f"{where}: empty video id")
        subset = (row.get("subset") or "").strip() or DEFAULT_SUBSET
        duration = _number((row.get("duration") or "").strip(), where, "duration", optional=True)
        fps = _number((row.get("fps") or "").strip(), where, "fps", optional=True)
        for name, val in (("duration", duration), ("fps", fps)):
            if val is not None and val <= 0:
                raise AnnotationError(f"{where}: {name} {val} is not positive")
        ann = videos.get(vid)
        if ann is None:
            ann = videos[vid] = VideoAnnotation(subset=subset, duration=duration, fps=fps)
        else:
            if ann.subset != subset:
                raise AnnotationError(f"{where}: video {vid} is in subset {subset!r} here but "
                                      f"{ann.subset!r} on an earlier row")
            for name, val in (("duration", duration), ("fps", fps)):
                old = getattr(ann, name)
                if val is not None and old is not None and val != old:
                    raise AnnotationError(f"{where}: video {vid} has {name} {val} here but {old} "
                                          f"on an earlier row")
                if old is None and val is not None:
                    setattr(ann, name, val)
        start, end, label = (row[c].strip() for c in ("start", "end", "label"))
        if not (start or end or label):
            continue                                  # declares a video without actions
        if not label:
            raise AnnotationError(f"{where}: empty label")
        ann.segments.append((*_segment(start, end, where, vid), label))
    for vid, ann in videos.items():                   # clip once the duration is known
        kept = []
        for s, e, lab in ann.segments:
            c = _clip(vid, (s, e), ann.duration, str(path))
            if c is not None:
                kept.append((c[0], c[1], lab))
        ann.segments = kept
    return _finish(videos, classes, str(path), [])


def load_annotations(path: str | Path, classes: Sequence[str] | str | Path | None = None,
                     fmt: str = "auto", *, allow_partial_classes: bool = False,
                     duplicates: str = "keep") -> Annotations:
    """Load annotations; ``fmt`` "auto" picks THUMOS for a folder, CSV for ``.csv``, else JSON
    (EPIC-Kitchens-100 and Ego4D-MQ files and folders are recognised by their names and headers,
    `stages.data.egocentric`; their label task is the verb for EPIC).

    ``classes``: class names, a class-list file (one per line), or None (derived: the file's
    ``classes``, THUMOS class files, or the sorted labels).  ``allow_partial_classes``: accept a
    THUMOS class file that exists for some splits only.  ``duplicates``: "keep" (ActivityNet,
    default) or "drop" (ActionFormer) duplicate ground-truth segments, with a warning either way
    (`stages.data.checks`).
    """
    path = Path(path)
    if not path.exists():
        raise FileNotFoundError(f"annotations not found: {path}")
    from stages.data import egocentric  # EPIC-Kitchens-100 / Ego4D-MQ layouts (imports this module)

    if fmt == "auto":
        fmt = egocentric.detect_format(path)
    loaders = {"activitynet": load_activitynet_json, "thumos": load_thumos_folder,
               "csv": load_csv, "epic": egocentric.load_epic_csv, "ego4d": egocentric.load_ego4d_mq}
    if fmt not in loaders:
        raise StageError(f"unknown annotation format {fmt!r}; valid: auto, {', '.join(loaders)}")
    from stages.data.checks import apply_duplicate_policy

    if fmt == "thumos":
        ann = load_thumos_folder(path, classes, allow_partial_classes=allow_partial_classes)
    else:
        ann = loaders[fmt](path, classes)
    return apply_duplicate_policy(ann, duplicates)
