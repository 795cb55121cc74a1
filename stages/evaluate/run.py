"""Evaluate ActivityNet-format detection results against annotations; write and format metrics.

Results format (ActivityNet challenge): ``{"version": ..., "results": {video_id: [{"label": name,
"score": s, "segment": [start_s, end_s]}, ...]}, "external_data": {}}``.
"""

from __future__ import annotations

import json
import math
import warnings
from collections.abc import Iterable, Mapping, Sequence
from pathlib import Path
from typing import Any

from losa.metrics.pairs import pair_accuracy
from losa.metrics.detection import ANET_TIOUS, evaluate_detection
from stages.data.annotations import Annotations, load_annotations
from stages.errors import StageError
from storage.atomic import atomic_write_json


class PredictionError(StageError):
    """Malformed or inconsistent predictions (message names the file and item)."""


def load_predictions(predictions: str | Path | Mapping, name: str | None = None) -> list[dict]:
    """Read ActivityNet results (a file path or an already-loaded dict) into rows
    ``{"video", "label", "start", "end", "score"}``; errors name the file, video and item."""
    return _read_results(predictions, name)[1]


def _read_results(predictions: str | Path | Mapping, name: str | None = None
                  ) -> tuple[list[str], list[dict]]:
    """(every video id listed in the results, even with no detections; prediction rows)."""
    if isinstance(predictions, Mapping):
        data: Any = predictions
        src = name or "predictions"
    else:
        path = Path(predictions)
        src = name or str(path)
        if not path.is_file():
            raise FileNotFoundError(f"predictions file not found: {path}")
        try:
            data = json.loads(path.read_text(encoding="utf-8"))
        except (json.JSONDecodeError, UnicodeDecodeError) as err:
            raise PredictionError(f"{src}: not valid JSON ({err})") from None
    if not isinstance(data, Mapping) or not isinstance(data.get("results"), Mapping):
        raise PredictionError(f"{src}: missing top-level object 'results'")
    rows: list[dict] = []
    for vid, items in data["results"].items():
        if not isinstance(items, list):
            raise PredictionError(f"{src}: video {vid}: results are not a list")
        for j, item in enumerate(items):
            where = f"{src}: video {vid} prediction #{j}"
            if not isinstance(item, Mapping):
                raise PredictionError(f"{where}: not an object")
            for key in ("label", "score", "segment"):
                if key not in item:
                    raise PredictionError(f"{where}: missing field {key!r}")
            seg = item["segment"]
            if not isinstance(seg, (list, tuple)) or len(seg) != 2:
                raise PredictionError(f"{where}: segment {seg!r} is not [start, end]")
            try:
                start, end, score = float(seg[0]), float(seg[1]), float(item["score"])
            except (TypeError, ValueError):
                raise PredictionError(f"{where}: segment/score are not numbers") from None
            if not all(map(math.isfinite, (start, end, score))):
                raise PredictionError(f"{where}: segment/score are not finite")
            if end < start:
                raise PredictionError(f"{where}: end {end} < start {start}")
            rows.append({"video": str(vid), "label": item["label"], "start": start, "end": end,
                         "score": score})
    return [str(v) for v in data["results"]], rows


def resolve_subset(annotations: Annotations, subset: str | None) -> str | None:
    """``subset`` as given, or the only subset when None; several subsets and None → ValueError."""
    if subset is not None:
        annotations.videos_in(subset)                  # raises for an unknown subset
        return subset
    subsets = annotations.subsets()
    if len(subsets) > 1:
        raise StageError(f"{annotations.source or 'annotations'} has several subsets "
                         f"({', '.join(subsets)}); choose one to evaluate")
    return subsets[0] if subsets else None


def _listing(items: Sequence[str], limit: int = 5) -> str:
    shown = ", ".join(items[:limit])
    return shown + (f" … (+{len(items) - limit} more)" if len(items) > limit else "")


def evaluate_files(predictions_json: str | Path | Mapping, annotations: str | Path | Annotations,
                   subset: str | None = None, tious: Sequence[float] = ANET_TIOUS,
                   exclude: Iterable[str] = (), classes: Sequence[str] | str | Path | None = None,
                   strict: bool = False, pairs: Sequence[Sequence[str]] = ()) -> dict:
    """Detection metrics of ActivityNet results against the ground truth of one subset.

    ``exclude``: video ids removed from both sides (e.g. :func:`stages.data.annotations.thumos_exclusions`).
    Predictions for videos outside the subset are scored as the official ActivityNet evaluator
    scores them — every detection there is a false positive — with a warning naming the videos
    (``strict=True``: PredictionError instead); ground-truth videos without predictions count as
    misses; labels must be class names of the annotations.
    ``pairs``: class pairs whose :func:`losa.metrics.pairs.pair_accuracy` is added as
    ``"pair_accuracy": {"a+b": {...}}`` (both classes must be classes of the annotations).
    Returns :func:`losa.metrics.detection.evaluate_detection`'s dict plus ``"subset"`` and ``"excluded"``.
    """
    ann = annotations if isinstance(annotations, Annotations) else load_annotations(
        annotations, classes)
    subset = resolve_subset(ann, subset)
    excluded = set(exclude)
    video_ids = [v for v in ann.videos_in(subset) if v not in excluded]
    in_subset = set(video_ids)
    gt = [row for row in ann.ground_truth(subset) if row["video"] in in_subset]
    if not gt:
        raise StageError(f"subset {subset!r} of {ann.source or 'annotations'} has no "
                         f"ground-truth segments to evaluate against")
    src = str(predictions_json) if not isinstance(predictions_json, Mapping) else "predictions"
    listed, rows = _read_results(predictions_json)
    preds = [p for p in rows if p["video"] not in excluded]
    stray = sorted(set(listed) - in_subset - excluded)
    if stray:
        msg = (f"{src}: {len(stray)} video(s) not in subset {subset!r} of the annotations: "
               f"{_listing(stray)}")
        if strict:
            raise PredictionError(msg)
        warnings.warn(msg + " (their detections count as false positives, as in the official "
                      "evaluator)", stacklevel=2)
    known = set(ann.classes)
    for p in preds:
        if not isinstance(p["label"], str) or p["label"] not in known:
            raise PredictionError(f"{src}: video {p['video']} has a prediction with label "
                                  f"{p['label']!r} that is not a class of the annotations")
    metrics = evaluate_detection(gt, preds, tious)
    if pairs:
        for pair in pairs:
            missing = [c for c in pair if c not in known]
            if missing:
                raise StageError(f"class pair {'+'.join(pair)!r}: {missing[0]!r} is not a class of the annotations")
        metrics["pair_accuracy"] = {"+".join(pair): pair_accuracy(gt, preds, pair) for pair in pairs}
    metrics["counts"]["videos"] = len(video_ids)
    metrics["subset"] = subset
    metrics["excluded"] = sorted(excluded & set(ann.videos))
    metrics["unannotated"] = stray
    return metrics


def write_metrics(metrics: Mapping, path: str | Path) -> Path:
    """Write metrics as JSON atomically (`storage.atomic`)."""
    payload = {
        "tious": list(metrics["tious"]),
        "mAP": list(metrics["mAP"]),
        "average_mAP": float(metrics["average_mAP"]),
        "per_class": {str(k): list(v) for k, v in metrics["per_class"].items()},
        "recall_at_k": {str(k): list(v) for k, v in metrics["recall_at_k"].items()},
    }
    for extra in ("pair_accuracy", "counts", "subset", "excluded", "unannotated"):
        if extra in metrics:
            payload[extra] = metrics[extra]
    return atomic_write_json(path, payload, indent=2)


def format_table(metrics: Mapping) -> str:
    """Plain-text table: AP (%) per class and tIoU with #GT, then mAP per tIoU, average mAP and
    class-agnostic recall at k."""
    tious = [float(t) for t in metrics["tious"]]
    counts = metrics.get("counts", {}).get("ground_truth_per_class", {})
    names = [str(c) for c in metrics["per_class"]]
    width = max([len("average mAP"), *map(len, names)]) + 2
    head = f"{'class':<{width}}{'#GT':>6}" + "".join(f"{t:>8.2f}" for t in tious) + f"{'avg':>8}"
    lines = [head, "-" * len(head)]
    for label, aps in metrics["per_class"].items():
        avg = sum(aps) / len(aps)
        lines.append(f"{str(label):<{width}}{counts.get(label, ''):>6}"
                     + "".join(f"{100 * a:>8.2f}" for a in aps) + f"{100 * avg:>8.2f}")
    lines.append("-" * len(head))
    total = metrics.get("counts", {}).get("ground_truth", "")
    lines.append(f"{'mAP':<{width}}{total:>6}" + "".join(f"{100 * a:>8.2f}" for a in metrics["mAP"])
                 + f"{100 * float(metrics['average_mAP']):>8.2f}")
    for k, rec in metrics.get("recall_at_k", {}).items():
        avg = sum(rec) / len(rec) if rec else 0.0
        lines.append(f"{f'recall@{k}':<{width}}{'':>6}" + "".join(f"{100 * r:>8.2f}" for r in rec)
                     + f"{100 * avg:>8.2f}")
    for name, pa in metrics.get("pair_accuracy", {}).items():
        acc = "n/a" if pa["accuracy"] is None else f"{100 * pa['accuracy']:.1f} %"
        lines.append(f"pair {name}: {acc} of {pa['instances'] - pa['missed']} instances labelled right "
                     f"(tIoU >= {pa['tiou']:g}; {pa['missed']} missed; chance 50 %)")
    lines.append(f"average mAP over tIoU {', '.join(f'{t:g}' for t in tious)}: "
                 f"{100 * float(metrics['average_mAP']):.2f}")
    return "\n".join(lines)
