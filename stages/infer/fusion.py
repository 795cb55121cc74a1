"""External video-level classifier scores: read the file, relabel detection results with them.

Classifier-scores file (JSON; the layout ActionFormer, OpenTAD and the CUHK ActivityNet classifier
release use)::

    {"class": ["Applying sunscreen", ...],            # or "classes"; K names, score order
     "results": {"<video id>": [s_0, ..., s_{K-1}],   # one score per class
                 ...}}

Also accepted: per-video objects ``{"<video id>": {"<class name>": score, ...}}``, a file without
the ``results`` wrapper (the top level is then the per-video mapping), and score lists without a
class list when the caller supplies the class order (the annotations' classes). A video id
``v_<id>`` matches ``<id>`` and the other way round (ActivityNet ids appear both ways).

`fuse_results` applies :func:`losa.post.fusion.fuse_video` to every video of an ActivityNet
results dict: the detections' own labels are ignored (the detector is class-agnostic) and each
segment is repeated for the ``topk`` best classes of its video.
"""

from __future__ import annotations

import json
import math
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Literal

import numpy as np

from losa.post.fusion import fuse_video
from losa.schema import knob, settings
from stages.errors import StageError

__all__ = ["ClassifierScores", "ClassifierScoresError", "FusionSettings", "agnostic_annotations",
           "fuse_predictions", "fuse_results", "load_classifier_scores"]


class ClassifierScoresError(StageError):
    """A classifier-scores file that cannot be used (message names the file and item)."""


@settings(what="fusion", error=StageError, frozen=True)
class FusionSettings:
    """How detections and class scores are combined (see :mod:`losa.post.fusion`)."""

    topk: int = knob(2, "With classifier scores: classes paired with every segment.", ge=1, flag="fusion_topk")
    formula: Literal["sqrt", "product", "segment"] = knob(
        "sqrt", "With classifier scores: sqrt = sqrt(class x segment score) (ActionFormer), product, or "
                "segment (segment score only).", flag="fusion_formula")
    softmax: bool = knob(False, "With classifier scores: softmax the class scores first (raw logits).",
                         flag="fusion_softmax")
    max_segments: int = knob(0, "With classifier scores: best segments per video kept before fusion (0: all).",
                             ge=0, flag="fusion_max_segments")

    def to_dict(self) -> dict[str, Any]:
        return {"topk": self.topk, "formula": self.formula, "softmax": self.softmax,
                "max_segments": self.max_segments}


@dataclass
class ClassifierScores:
    """Per-video class scores (``scores[video]`` is a ``[K]`` array in ``classes`` order)."""

    classes: list[str]
    scores: dict[str, np.ndarray]
    source: str = ""

    def lookup(self, video_id: str) -> np.ndarray | None:
        """Scores of ``video_id`` (also tried with the ``v_`` prefix added or removed)."""
        for key in (video_id, f"v_{video_id}", video_id[2:] if video_id.startswith("v_") else None):
            if key is not None and key in self.scores:
                return self.scores[key]
        return None


def _read_json_object(path: Path, what: str) -> Mapping[str, Any]:
    """The JSON object in ``path``; FileNotFoundError naming ``what``, else a one-line
    ClassifierScoresError when it is not valid JSON or not an object."""
    if not path.is_file():
        raise FileNotFoundError(f"{what} not found: {path}")
    try:
        data = json.loads(path.read_text(encoding="utf-8"))
    except (json.JSONDecodeError, UnicodeDecodeError) as err:
        raise ClassifierScoresError(f"{path}: not valid JSON ({err})") from None
    if not isinstance(data, Mapping):
        raise ClassifierScoresError(f"{path}: top level is not an object")
    return data


def load_classifier_scores(path: str | Path, classes: Sequence[str] | None = None
                           ) -> ClassifierScores:
    """Read a classifier-scores file (module docstring). ``classes``: the class order to use when
    the file has no class list (and to check score lists against)."""
    path = Path(path)
    data = _read_json_object(path, "classifier scores file")
    names = data.get("class", data.get("classes"))
    per_video = data.get("results", data if names is None else None)
    if not isinstance(per_video, Mapping) or not per_video:
        raise ClassifierScoresError(f"{path}: no per-video scores (expected an object 'results')")
    if names is not None and not (isinstance(names, list) and all(isinstance(c, str) for c in names)):
        raise ClassifierScoresError(f"{path}: 'class' is not a list of class names")
    order = list(names) if names is not None else (list(classes) if classes is not None else None)
    out: dict[str, np.ndarray] = {}
    for vid, row in per_video.items():
        where = f"{path}: video {vid}"
        if isinstance(row, Mapping):
            if order is None:
                order = sorted(row)
            unknown = sorted(set(row) - set(order))
            if unknown:
                raise ClassifierScoresError(f"{where}: class {unknown[0]!r} is not in the class list")
            values = [row.get(c, 0.0) for c in order]
        elif isinstance(row, list):
            if order is None:
                raise ClassifierScoresError(f"{path}: score lists need a class list ('class' key "
                                            f"in the file, or the annotations' classes)")
            if len(row) != len(order):
                raise ClassifierScoresError(f"{where}: {len(row)} scores but {len(order)} classes")
            values = row
        else:
            raise ClassifierScoresError(f"{where}: scores are neither a list nor an object")
        try:
            arr = np.asarray([float(v) for v in values], dtype=np.float64)
        except (TypeError, ValueError):
            raise ClassifierScoresError(f"{where}: scores are not numbers") from None
        if not all(math.isfinite(v) for v in arr):
            raise ClassifierScoresError(f"{where}: scores are not finite")
        out[str(vid)] = arr
    assert order is not None
    return ClassifierScores(classes=list(order), scores=out, source=str(path))


def fuse_results(results: Mapping[str, Any], scores: ClassifierScores,
                 settings: FusionSettings = FusionSettings(),
                 known_classes: Sequence[str] | None = None) -> dict[str, Any]:
    """ActivityNet results relabelled with the video-level classes (a new dict; the input is kept).

    Every video listed in ``results`` needs scores (ClassifierScoresError naming the first one
    without). ``known_classes``: when given, every class of the scores file must be one of them
    (e.g. the annotations' classes), so that a mismatched file fails before evaluation.
    """
    if known_classes is not None:
        extra = [c for c in scores.classes if c not in set(known_classes)]
        if extra:
            raise ClassifierScoresError(f"{scores.source or 'classifier scores'}: class {extra[0]!r} "
                                        f"is not a class of the annotations")
    per_video = results.get("results")
    if not isinstance(per_video, Mapping):
        raise ClassifierScoresError("results to fuse have no 'results' object")
    missing = [v for v in per_video if scores.lookup(str(v)) is None]
    if missing:
        raise ClassifierScoresError(f"{scores.source or 'classifier scores'}: no scores for video "
                                    f"{missing[0]} ({len(missing)} video(s) without)")
    fused: dict[str, list[dict[str, Any]]] = {}
    for vid, dets in per_video.items():
        cls_scores = scores.lookup(str(vid))
        if settings.formula == "sqrt" and not settings.softmax and np.any(cls_scores < 0):
            raise ClassifierScoresError(f"{scores.source or 'classifier scores'}: video {vid} has "
                                        f"negative class scores (logits?): use softmax or another formula")
        seg_scores = np.asarray([float(d["score"]) for d in dets], dtype=np.float64)
        if not len(dets):
            fused[vid] = []
            continue
        seg_i, cls_i, value = fuse_video(seg_scores, cls_scores, settings.topk, settings.formula,
                                         settings.softmax, settings.max_segments)
        fused[vid] = [{"label": scores.classes[int(c)], "score": float(v),
                       "segment": [float(x) for x in dets[int(s)]["segment"]]}
                      for s, c, v in zip(seg_i, cls_i, value)]
    extra_data = dict(results.get("external_data") or {})
    extra_data["fusion"] = {"classifier_scores": scores.source, **settings.to_dict()}
    return {**{k: v for k, v in results.items() if k not in ("results", "external_data")},
            "results": fused, "external_data": extra_data}


def agnostic_annotations(annotations: Any, name: str = "action") -> Any:
    """A copy of `stages.data.annotations.Annotations` in which every segment has the one class
    ``name`` (class-agnostic evaluation: how well segments are found, whatever their class)."""
    from dataclasses import replace

    videos = {vid: replace(a, segments=[(s, e, name) for s, e, _ in a.segments])
              for vid, a in annotations.videos.items()}
    return replace(annotations, videos=videos, classes=[name])


def fuse_predictions(predictions: str | Path | Mapping[str, Any], scores_file: str | Path,
                     settings: FusionSettings = FusionSettings(),
                     classes: Sequence[str] | None = None) -> dict[str, Any]:
    """`fuse_results` for a results file (or dict) and a classifier-scores file; ``classes``: the
    annotations' classes (class order of score lists without names, and the check that every
    class of the scores file is known)."""
    if isinstance(predictions, Mapping):
        results = predictions
    else:
        results = _read_json_object(Path(predictions), "predictions file")
    scores = load_classifier_scores(scores_file, classes)
    return fuse_results(results, scores, settings, known_classes=classes)

