"""Temporal action annotations: `load_annotations` reads ActivityNet JSON, THUMOS-14 txt folders or
CSV (`stages.data.annotation_formats`), EPIC-Kitchens-100 and Ego4D-MQ (`stages.data.egocentric`) into
one `Annotations` object (`stages.data.annotation_model`, whose validation names the offending file and
item in one line) and applies the duplicate-segment policy; the model and loaders are re-exported here.
"""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path

from stages.data.annotation_formats import load_activitynet_json, load_csv, load_thumos_folder
from stages.data.annotation_model import (DEFAULT_SUBSET, THUMOS_AMBIGUOUS, THUMOS_POLICIES, AnnotationError,
                                          Annotations, VideoAnnotation, canonical_subset, load_class_list,
                                          thumos_exclusions)
from stages.errors import StageError

__all__ = [
    "DEFAULT_SUBSET", "THUMOS_AMBIGUOUS", "THUMOS_POLICIES", "AnnotationError", "Annotations",
    "VideoAnnotation", "canonical_subset", "load_activitynet_json", "load_annotations", "load_class_list",
    "load_csv", "load_thumos_folder", "thumos_exclusions",
]


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
    from stages.data import egocentric  # EPIC-Kitchens-100 / Ego4D-MQ layouts

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
