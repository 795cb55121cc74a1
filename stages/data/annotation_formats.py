"""The three generic annotation formats, each read into one `Annotations` object
(`stages.data.annotation_model`); `stages.data.annotations.load_annotations` picks among them.

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
"""

from __future__ import annotations

import csv
import json
import re
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from stages.data.annotation_model import (DEFAULT_SUBSET, THUMOS_AMBIGUOUS, AnnotationError, Annotations,
                                          VideoAnnotation, _clip, _finish, _number, _segment)

_THUMOS_FILE = re.compile(r"^(?P<cls>.+)_(?P<split>[A-Za-z0-9]+)\.txt$")
_CSV_REQUIRED = ("video", "start", "end", "label")
_CSV_OPTIONAL = ("subset", "duration", "fps")


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
