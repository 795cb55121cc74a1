"""EPIC-Kitchens-100 and Ego4D Moment Queries annotations, loaded into the same `Annotations` model.

Both are multi-label: actions of different classes overlap in time, which the model, the targets
and the per-class NMS handle (docs/activitynet.md, "Multi-label datasets").

EPIC-Kitchens-100 (``EPIC_100_train.csv`` / ``EPIC_100_validation.csv``)
    Columns ``narration_id, participant_id, video_id, narration_timestamp, start_timestamp,
    stop_timestamp, start_frame, stop_frame, narration, verb, verb_class, noun, noun_class, ...``;
    timestamps ``HH:MM:SS.ff``. One row = one action of video ``video_id``. ``task`` picks the
    label: ``"verb"`` (``verb_class``, 97 classes) or ``"noun"`` (``noun_class``, 300). Class
    names: the ``key`` column of ``EPIC_100_verb_classes.csv`` / ``EPIC_100_noun_classes.csv``
    (``id,key,...``; given as ``classes`` or found next to the file); without it the class id
    itself (``"0"``, ``"1"``, ... up to the largest id, so that class index = EPIC id). The subset
    comes from the file name (train → training, validation). Durations come from
    ``EPIC_100_video_info.csv`` (``video_id,duration,fps,...``) when it lies next to the file.
    A folder loads every ``EPIC_100_<split>.csv`` that has the label column.

Ego4D Moment Queries (``moments_train.json`` / ``moments_val.json``)
    ``{"videos": [{"video_uid", "split", "clips": [{"clip_uid", "clip_start_sec",
    "clip_end_sec", "annotations": [{"annotator_uid", "labels": [{"label", "start_time",
    "end_time", "primary", ...}]}]}]}]}``. The unit is the clip (features are extracted per clip,
    as in the MQ baseline and ActionFormer): video id = ``clip_uid``, times = ``start_time`` /
    ``end_time`` (clip-relative seconds), duration = ``clip_end_sec - clip_start_sec``, subset =
    the video's ``split`` (else the file name). Every annotator's labels are kept. A folder loads
    every ``moments_*.json``.
"""

from __future__ import annotations

import csv
import json
import re
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from stages.data.annotation_model import (AnnotationError, Annotations, VideoAnnotation, _clip, _finish,
                                          _number, _segment, load_class_list)

__all__ = ["EPIC_TASKS", "detect_format", "load_ego4d_mq", "load_epic_csv", "parse_timestamp"]

EPIC_TASKS = ("verb", "noun")
_EPIC_REQUIRED = ("video_id", "start_timestamp", "stop_timestamp")
_EPIC_FILE = re.compile(r"^EPIC_100_(?P<split>train|validation)\.csv$")
_SPLITS = {"train": "training", "val": "validation", "validation": "validation",
           "test": "testing"}
_TIMESTAMP = re.compile(r"^(?:(?P<h>\d+):)?(?P<m>\d+):(?P<s>\d+(?:\.\d*)?)$")


def parse_timestamp(text: str, where: str) -> float:
    """``HH:MM:SS.ff`` (or ``MM:SS.ff``, or plain seconds) → seconds."""
    value = str(text).strip()
    m = _TIMESTAMP.match(value)
    if m is None:
        out = _number(value, where, "timestamp")
        assert out is not None
        return out
    return int(m.group("h") or 0) * 3600 + int(m.group("m")) * 60 + float(m.group("s"))


def _split_of(name: str) -> str:
    for key, subset in _SPLITS.items():
        if re.search(rf"(^|[_.-]){key}([_.-]|$)", name.lower()):
            return subset
    return "all"


def _epic_class_names(classes: Sequence[str] | str | Path | None, folder: Path, task: str,
                      ids: set[int]) -> list[str]:
    """Class names in EPIC id order: an EPIC class CSV (``id,key``), a list, a one-per-line file,
    the class CSV found next to the annotations, or the ids themselves."""
    if classes is None:
        found = folder / f"EPIC_100_{task}_classes.csv"
        classes = found if found.is_file() else None
    if classes is None:
        return [str(i) for i in range(max(ids) + 1)] if ids else []
    if not isinstance(classes, (str, Path)):
        return list(classes)
    path = Path(classes)
    if path.suffix.lower() != ".csv":
        return load_class_list(path)
    with path.open(newline="", encoding="utf-8") as fh:
        rows = list(csv.DictReader(fh))
    if not rows or not {"id", "key"} <= set(rows[0]):
        raise AnnotationError(f"{path}: expected an EPIC class file with columns id,key")
    by_id = {}
    for lineno, row in enumerate(rows, 2):
        try:
            by_id[int(row["id"])] = row["key"].strip()
        except ValueError:
            raise AnnotationError(f"{path}:{lineno}: id {row['id']!r} is not an integer") from None
    if sorted(by_id) != list(range(len(by_id))):
        raise AnnotationError(f"{path}: class ids are not 0..{len(by_id) - 1}")
    return [by_id[i] for i in range(len(by_id))]


def _epic_durations(folder: Path) -> dict[str, float]:
    info = folder / "EPIC_100_video_info.csv"
    if not info.is_file():
        return {}
    with info.open(newline="", encoding="utf-8") as fh:
        return {row["video_id"].strip(): float(row["duration"]) for row in csv.DictReader(fh)
                if row.get("video_id") and row.get("duration")}


def load_epic_csv(path: str | Path, classes: Sequence[str] | str | Path | None = None,
                  task: str = "verb") -> Annotations:
    """Load EPIC-Kitchens-100 action annotations (a CSV or a folder of them; module docstring)."""
    if task not in EPIC_TASKS:
        raise AnnotationError(f"unknown EPIC task {task!r}; choose from {', '.join(EPIC_TASKS)}")
    path = Path(path)
    if not path.exists():
        raise FileNotFoundError(f"annotations not found: {path}")
    files = sorted(p for p in path.iterdir() if _EPIC_FILE.match(p.name)) if path.is_dir() else [path]
    if not files:
        raise AnnotationError(f"{path}: no EPIC_100_train.csv / EPIC_100_validation.csv")
    folder = path if path.is_dir() else path.parent
    durations = _epic_durations(folder)
    column = f"{task}_class"
    rows_by_file = []
    for file in files:
        with file.open(newline="", encoding="utf-8") as fh:
            reader = csv.DictReader(fh)
            header = [h.strip() for h in (reader.fieldnames or [])]
            missing = [c for c in (*_EPIC_REQUIRED, column) if c not in header]
            if missing:
                raise AnnotationError(f"{file}: header is missing column(s) {', '.join(missing)} "
                                      f"(an EPIC-Kitchens-100 annotation CSV)")
            reader.fieldnames = header
            rows_by_file.append((file, _split_of(file.stem), list(reader)))
    ids: set[int] = set()
    parsed = []
    for file, subset, rows in rows_by_file:
        for lineno, row in enumerate(rows, 2):
            where = f"{file}:{lineno}"
            vid = (row.get("video_id") or "").strip()
            if not vid:
                raise AnnotationError(f"{where}: empty video_id")
            try:
                cls = int(str(row[column]).strip())
            except ValueError:
                raise AnnotationError(f"{where}: {column} {row[column]!r} is not an integer") from None
            if cls < 0:
                raise AnnotationError(f"{where}: negative {column} {cls}")
            ids.add(cls)
            seg = _segment(parse_timestamp(row["start_timestamp"], where),
                           parse_timestamp(row["stop_timestamp"], where), where, vid)
            parsed.append((where, subset, vid, seg, cls))
    names = _epic_class_names(classes, folder, task, ids)
    videos: dict[str, VideoAnnotation] = {}
    for where, subset, vid, seg, cls in parsed:
        if cls >= len(names):
            raise AnnotationError(f"{where}: {column} {cls} is not in the class list "
                                  f"({len(names)} classes)")
        ann = videos.setdefault(vid, VideoAnnotation(subset=subset, duration=durations.get(vid)))
        if ann.subset != subset:
            raise AnnotationError(f"{where}: video {vid} is in subset {subset!r} here but "
                                  f"{ann.subset!r} in another file")
        clipped = _clip(vid, seg, ann.duration, where)
        if clipped is not None:
            ann.segments.append((clipped[0], clipped[1], names[cls]))
    return _finish(videos, names, str(path), [])


def load_ego4d_mq(path: str | Path, classes: Sequence[str] | str | Path | None = None
                  ) -> Annotations:
    """Load Ego4D Moment Queries annotations (a ``moments_*.json`` or a folder; module docstring)."""
    path = Path(path)
    if not path.exists():
        raise FileNotFoundError(f"annotations not found: {path}")
    files = sorted(path.glob("moments_*.json")) if path.is_dir() else [path]
    if not files:
        raise AnnotationError(f"{path}: no moments_*.json files")
    videos: dict[str, VideoAnnotation] = {}
    for file in files:
        try:
            data = json.loads(file.read_text(encoding="utf-8"))
        except (json.JSONDecodeError, UnicodeDecodeError) as err:
            raise AnnotationError(f"{file}: not valid JSON ({err})") from None
        if not isinstance(data, dict) or not isinstance(data.get("videos"), list):
            raise AnnotationError(f"{file}: missing top-level list 'videos' (Ego4D MQ layout)")
        default_subset = _split_of(file.stem)
        for i, video in enumerate(data["videos"]):
            vwhere = f"{file}: video #{i}"
            if not isinstance(video, dict) or not isinstance(video.get("clips"), list):
                raise AnnotationError(f"{vwhere}: missing list 'clips'")
            split = video.get("split")
            subset = _SPLITS.get(str(split).lower(), str(split)) if split else default_subset
            for clip in video["clips"]:
                _add_clip(videos, clip, subset, vwhere)
    return _finish(videos, classes, str(path), [])


def _add_clip(videos: dict[str, VideoAnnotation], clip: Any, subset: str, vwhere: str) -> None:
    if not isinstance(clip, dict) or not clip.get("clip_uid"):
        raise AnnotationError(f"{vwhere}: a clip without 'clip_uid'")
    uid = str(clip["clip_uid"])
    where = f"{vwhere} clip {uid}"
    start = clip.get("clip_start_sec", clip.get("video_start_sec"))
    end = clip.get("clip_end_sec", clip.get("video_end_sec"))
    duration = None
    if start is not None and end is not None:
        s = _number(start, where, "clip_start_sec")
        e = _number(end, where, "clip_end_sec")
        assert s is not None and e is not None
        if e <= s:
            raise AnnotationError(f"{where}: clip end {e} <= start {s}")
        duration = e - s
    if uid in videos:
        raise AnnotationError(f"{where}: clip listed twice")
    ann = videos[uid] = VideoAnnotation(subset=subset, duration=duration)
    for annotator in clip.get("annotations") or []:
        for j, label in enumerate(annotator.get("labels") or []):
            lwhere = f"{where} label #{j} of annotator {annotator.get('annotator_uid', '?')}"
            if not isinstance(label, dict) or not str(label.get("label") or "").strip():
                raise AnnotationError(f"{lwhere}: missing 'label'")
            for key in ("start_time", "end_time"):
                if key not in label:
                    raise AnnotationError(f"{lwhere}: missing {key!r}")
            seg = _clip(uid, _segment(label["start_time"], label["end_time"], lwhere, uid), duration,
                        lwhere)
            if seg is not None:
                ann.segments.append((seg[0], seg[1], str(label["label"]).strip()))


def detect_format(path: Path) -> str:
    """The annotation format of ``path`` for ``fmt="auto"``: a folder is EPIC (``EPIC_100_*.csv``),
    Ego4D (``moments_*.json``) or THUMOS; a CSV is EPIC when its header has ``start_timestamp``,
    else the generic CSV; a JSON named ``moments_*`` is Ego4D MQ, else ActivityNet."""
    if path.is_dir():
        if any(_EPIC_FILE.match(p.name) for p in path.iterdir()):
            return "epic"
        if any(path.glob("moments_*.json")):
            return "ego4d"
        return "thumos"
    if path.suffix.lower() == ".csv":
        with path.open(newline="", encoding="utf-8") as fh:
            header = next(csv.reader(fh), [])
        return "epic" if "start_timestamp" in {h.strip() for h in header} else "csv"
    return "ego4d" if path.name.startswith("moments_") else "activitynet"
