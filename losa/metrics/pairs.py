"""How well a detector tells apart two classes that only one cue separates (e.g. the demo's
``move_left`` / ``move_right``, which differ only in the direction of motion).

Average precision mixes localisation and labelling; this measure isolates the labelling: for every
ground-truth instance of either class, take the best score among the video's detections of each of
the two labels that overlap it with ``tIoU >= tiou``; the instance is *right* when its own label's
best score is higher, *wrong* when the other's is, *tied* (counts ½) when equal, and *missed* when
neither label has such a detection (left out of the accuracy).  Chance is 0.5.
"""
from __future__ import annotations

from collections import defaultdict
from collections.abc import Mapping, Sequence

import numpy as np

from losa.errors import LosaError
from losa.metrics.detection import segment_iou

__all__ = ["pair_accuracy"]


def pair_accuracy(gt: Sequence[Mapping], preds: Sequence[Mapping], pair: Sequence[str],
                  tiou: float = 0.5) -> dict:
    """``{"accuracy", "right", "wrong", "tied", "missed", "instances"}`` for ``pair = (a, b)``
    (rows as :func:`losa.metrics.detection.evaluate_detection`); accuracy is None when every
    instance was missed."""
    if len(pair) != 2 or pair[0] == pair[1]:
        raise LosaError(f"a class pair needs two different labels, got {list(pair)!r}")
    a, b = pair
    by_video: dict[object, dict[str, list[tuple[float, float, float]]]] = defaultdict(lambda: {a: [], b: []})
    for p in preds:
        if p["label"] in (a, b):
            by_video[p["video"]][p["label"]].append((float(p["start"]), float(p["end"]), float(p["score"])))
    counts = {"right": 0, "wrong": 0, "tied": 0, "missed": 0}
    for g in gt:
        if g["label"] not in (a, b):
            continue
        seg = np.array([float(g["start"]), float(g["end"])])
        best = {}
        for label in (a, b):
            rows = np.asarray(by_video[g["video"]][label], dtype=np.float64).reshape(-1, 3)
            ok = segment_iou(seg, rows[:, :2]) >= tiou if len(rows) else np.zeros(0, dtype=bool)
            best[label] = float(rows[ok, 2].max()) if ok.any() else None
        own, other = best[g["label"]], best[b if g["label"] == a else a]
        if own is None and other is None:
            counts["missed"] += 1
        elif other is None or (own is not None and own > other):
            counts["right"] += 1
        elif own is None or own < other:
            counts["wrong"] += 1
        else:
            counts["tied"] += 1
    decided = counts["right"] + counts["wrong"] + counts["tied"]
    acc = (counts["right"] + 0.5 * counts["tied"]) / decided if decided else None
    return {"accuracy": acc, **counts, "instances": decided + counts["missed"], "tiou": float(tiou)}
