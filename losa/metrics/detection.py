"""ActivityNet-style temporal action detection metrics (numpy only, no file I/O).

Average precision follows the official ActivityNet evaluator
(``ActivityNet/Evaluation/eval_detection.py``, ``compute_average_precision_detection``):

* per class, predictions are visited in order of descending score (stable sort, so ties keep their
  input order; the official code uses an unstable ``argsort()[::-1]``);
* a prediction is compared only with ground truths of the SAME video; those ground truths are
  visited in order of decreasing tIoU and the first one not yet matched with ``tIoU >= threshold``
  becomes a true positive (each ground truth is matched at most once per threshold); otherwise the
  prediction is a false positive (duplicates of an already matched instance are false positives);
* ``recall = cumsum(TP) / num_gt``, ``precision = cumsum(TP) / (cumsum(TP) + cumsum(FP))`` and AP is
  the all-point interpolated area under the monotone precision envelope (VOC 2011 style,
  :func:`interpolated_prec_rec`).

mAP is the mean over the classes that have ground truth (a class without predictions has AP 0;
predictions of classes absent from the ground truth do not enter the mean).
"""

from __future__ import annotations

from collections import defaultdict
from collections.abc import Hashable, Mapping, Sequence

import numpy as np
from losa.errors import LosaError

#: THUMOS-14 convention: tIoU 0.3:0.1:0.7.
THUMOS14_TIOUS: tuple[float, ...] = (0.3, 0.4, 0.5, 0.6, 0.7)
#: ActivityNet convention: tIoU 0.5:0.05:0.95.
ANET_TIOUS: tuple[float, ...] = tuple(round(0.5 + 0.05 * i, 2) for i in range(10))
#: Named presets accepted by :func:`resolve_tious`.
TIOU_PRESETS: dict[str, tuple[float, ...]] = {"thumos14": THUMOS14_TIOUS, "anet": ANET_TIOUS}
#: Top-k values reported by :func:`evaluate_detection` for class-agnostic recall.
RECALL_KS: tuple[int, ...] = (1, 5, 10, 50, 100)


def parse_tious(spec: str) -> tuple[float, ...]:
    """Parse ``"0.3:0.1:0.7"`` (inclusive range), ``"0.3,0.5,0.7"`` or ``"0.5"`` into thresholds.

    Raises ValueError naming the spec when it is malformed or a threshold is outside (0, 1].
    """
    text = spec.strip()
    try:
        if ":" in text:
            parts = [float(p) for p in text.split(":")]
            if len(parts) != 3:
                raise ValueError
            start, step, stop = parts
            if step <= 0 or stop < start:
                raise ValueError
            count = int(np.floor((stop - start) / step + 1e-6)) + 1
            values = [round(start + i * step, 6) for i in range(count)]
        else:
            values = [float(p) for p in text.split(",") if p.strip()]
    except ValueError:
        raise LosaError(
            f"invalid tIoU spec {spec!r}: use start:step:stop (e.g. 0.3:0.1:0.7) or a comma list"
        ) from None
    if not values:
        raise LosaError(f"invalid tIoU spec {spec!r}: no thresholds")
    bad = [v for v in values if not 0.0 < v <= 1.0]
    if bad:
        raise LosaError(f"invalid tIoU spec {spec!r}: threshold {bad[0]} is outside (0, 1]")
    return tuple(values)


def resolve_tious(tious: str | Sequence[float] | None = None, preset: str | None = None
                  ) -> tuple[float, ...]:
    """Thresholds from an explicit spec/sequence or a preset name ("thumos14", "anet").

    Giving both is an error; giving neither returns the ActivityNet thresholds.
    """
    if tious is not None and preset is not None:
        raise LosaError("give either explicit tIoUs or a preset, not both")
    if preset is not None:
        if preset not in TIOU_PRESETS:
            raise LosaError(f"unknown tIoU preset {preset!r}; valid: {', '.join(TIOU_PRESETS)}")
        return TIOU_PRESETS[preset]
    if tious is None:
        return ANET_TIOUS
    if isinstance(tious, str):
        return parse_tious(tious)
    return parse_tious(",".join(str(float(t)) for t in tious))


def segment_iou(seg: Sequence[float] | np.ndarray, segs: np.ndarray) -> np.ndarray:
    """Temporal IoU between one segment ``[2]`` and ``segs [N, 2]`` (start, end) → ``[N]``.

    Pairs whose union is empty (two zero-length segments) get tIoU 0.
    """
    seg = np.asarray(seg, dtype=np.float64).reshape(2)
    segs = np.asarray(segs, dtype=np.float64).reshape(-1, 2)
    inter = np.clip(np.minimum(seg[1], segs[:, 1]) - np.maximum(seg[0], segs[:, 0]), 0.0, None)
    union = (segs[:, 1] - segs[:, 0]) + (seg[1] - seg[0]) - inter
    out = np.zeros(len(segs), dtype=np.float64)
    np.divide(inter, union, out=out, where=union > 0)
    return out


def tiou_matrix(a: np.ndarray, b: np.ndarray) -> np.ndarray:
    """Pairwise temporal IoU: ``a [M, 2]`` × ``b [N, 2]`` → ``[M, N]``."""
    a = np.asarray(a, dtype=np.float64).reshape(-1, 2)
    b = np.asarray(b, dtype=np.float64).reshape(-1, 2)
    inter = np.clip(
        np.minimum(a[:, None, 1], b[None, :, 1]) - np.maximum(a[:, None, 0], b[None, :, 0]),
        0.0, None)
    union = (a[:, None, 1] - a[:, None, 0]) + (b[None, :, 1] - b[None, :, 0]) - inter
    out = np.zeros(inter.shape, dtype=np.float64)
    np.divide(inter, union, out=out, where=union > 0)
    return out


def interpolated_prec_rec(prec: np.ndarray, rec: np.ndarray) -> float:
    """All-point interpolated AP: area under the monotone (non-increasing) precision envelope."""
    mprec = np.concatenate([[0.0], np.asarray(prec, dtype=np.float64), [0.0]])
    mrec = np.concatenate([[0.0], np.asarray(rec, dtype=np.float64), [1.0]])
    mprec = np.maximum.accumulate(mprec[::-1])[::-1]
    idx = np.nonzero(mrec[1:] != mrec[:-1])[0] + 1
    return float(np.sum((mrec[idx] - mrec[idx - 1]) * mprec[idx]))


def _as_float(value: object, what: str) -> float:
    try:
        out = float(value)  # type: ignore[arg-type]
    except (TypeError, ValueError):
        raise LosaError(f"{what}: {value!r} is not a number") from None
    if not np.isfinite(out):
        raise LosaError(f"{what}: {value!r} is not finite")
    return out


def _table(rows: Sequence[Mapping], with_score: bool, kind: str
           ) -> tuple[list[Hashable], np.ndarray, np.ndarray]:
    """Validate detection rows → (videos, segments [N, 2], scores [N])."""
    videos: list[Hashable] = []
    segs = np.zeros((len(rows), 2), dtype=np.float64)
    scores = np.zeros(len(rows), dtype=np.float64)
    for i, row in enumerate(rows):
        try:
            vid = row["video"]
            start, end = row["start"], row["end"]
            score = row["score"] if with_score else 0.0
        except KeyError as err:
            raise LosaError(f"{kind} #{i} is missing field {err.args[0]!r}") from None
        start = _as_float(start, f"{kind} #{i} (video {vid}) start")
        end = _as_float(end, f"{kind} #{i} (video {vid}) end")
        if end < start:
            raise LosaError(f"{kind} #{i} (video {vid}) has end {end} < start {start}")
        videos.append(vid)
        segs[i] = (start, end)
        scores[i] = _as_float(score, f"{kind} #{i} (video {vid}) score")
    return videos, segs, scores


def _match_video(pred_segs: np.ndarray, gt_segs: np.ndarray, tious: np.ndarray) -> np.ndarray:
    """Greedy ActivityNet matching inside one video; predictions already in score order.

    Returns ``tp [len(tious), P]`` booleans.
    """
    num_t, num_p, num_g = len(tious), len(pred_segs), len(gt_segs)
    tp = np.zeros((num_t, num_p), dtype=bool)
    if num_g == 0 or num_p == 0:
        return tp
    iou = tiou_matrix(pred_segs, gt_segs)                     # [P, G]
    locked = np.zeros((num_t, num_g), dtype=bool)
    rows = np.arange(num_t)
    for p in range(num_p):
        order = np.argsort(-iou[p], kind="stable")            # GT by decreasing tIoU
        ious = iou[p, order]
        ok = (ious[None, :] >= tious[:, None]) & ~locked[:, order]   # [T, G]
        hit = ok.any(axis=1)
        first = order[np.argmax(ok, axis=1)]
        tp[hit, p] = True
        locked[rows[hit], first[hit]] = True
    return tp


def average_precision_detection(gt: Sequence[Mapping], preds: Sequence[Mapping],
                                tious: Sequence[float] = ANET_TIOUS) -> np.ndarray:
    """AP per tIoU threshold for ONE class.

    ``gt``: rows ``{"video", "start", "end"}``; ``preds``: rows ``{"video", "start", "end",
    "score"}`` (extra keys ignored). Returns ``[len(tious)]`` float64; all zeros when ``gt`` is
    empty or there are no predictions.
    """
    thr = np.asarray(tious, dtype=np.float64).reshape(-1)
    gt_videos, gt_segs, _ = _table(gt, with_score=False, kind="ground truth")
    p_videos, p_segs, p_scores = _table(preds, with_score=True, kind="prediction")
    ap = np.zeros(len(thr), dtype=np.float64)
    if len(gt_videos) == 0 or len(p_videos) == 0:
        return ap
    order = np.argsort(-p_scores, kind="stable")
    gt_by_video: dict[Hashable, list[int]] = defaultdict(list)
    for i, vid in enumerate(gt_videos):
        gt_by_video[vid].append(i)
    pred_by_video: dict[Hashable, list[int]] = defaultdict(list)
    for rank, i in enumerate(order):
        pred_by_video[p_videos[i]].append(rank)
    tp = np.zeros((len(thr), len(order)), dtype=bool)
    # Matching is independent across videos (a GT belongs to one video), so each video is run on
    # its own, in the global score order restricted to that video.
    for vid, ranks in pred_by_video.items():
        g_idx = gt_by_video.get(vid)
        if not g_idx:
            continue                                           # no GT in this video → all FP
        r = np.asarray(ranks)
        tp[:, r] = _match_video(p_segs[order[r]], gt_segs[g_idx], thr)
    tp_cum = np.cumsum(tp, axis=1, dtype=np.float64)
    fp_cum = np.cumsum(~tp, axis=1, dtype=np.float64)
    recall = tp_cum / len(gt_videos)
    precision = tp_cum / (tp_cum + fp_cum)
    for t in range(len(thr)):
        ap[t] = interpolated_prec_rec(precision[t], recall[t])
    return ap


def recall_at_k(gt: Sequence[Mapping], preds: Sequence[Mapping], tious: Sequence[float],
                ks: Sequence[int] = RECALL_KS) -> dict[int, list[float]]:
    """Class-agnostic recall of ground truth using each video's top-k predictions.

    As ActivityNet's proposal AR@AN (``eval_proposal.py``): for every video with ground truth, its
    predictions of ANY class are sorted by descending score and cut to the top ``k``; a
    ground-truth instance counts as recalled at threshold ``t`` when at least one of those has
    ``tIoU >= t`` (no one-to-one matching). Recall = recalled instances / all instances (pooled
    over videos). Returns ``{k: [recall per tIoU]}``.
    """
    thr = np.asarray(tious, dtype=np.float64).reshape(-1)
    gt_videos, gt_segs, _ = _table(gt, with_score=False, kind="ground truth")
    p_videos, p_segs, p_scores = _table(preds, with_score=True, kind="prediction")
    hits = {k: np.zeros(len(thr), dtype=np.float64) for k in ks}
    if not gt_videos:
        return {k: [0.0] * len(thr) for k in ks}
    gt_by_video: dict[Hashable, list[int]] = defaultdict(list)
    for i, vid in enumerate(gt_videos):
        gt_by_video[vid].append(i)
    pred_by_video: dict[Hashable, list[int]] = defaultdict(list)
    for i, vid in enumerate(p_videos):
        pred_by_video[vid].append(i)
    for vid, g_idx in gt_by_video.items():
        p_idx = np.asarray(pred_by_video.get(vid, []), dtype=np.int64)
        if len(p_idx) == 0:
            continue
        p_idx = p_idx[np.argsort(-p_scores[p_idx], kind="stable")]
        iou = tiou_matrix(gt_segs[g_idx], p_segs[p_idx])       # [G, P]
        # best tIoU reachable with the top-k predictions, for every k at once
        best = np.maximum.accumulate(iou, axis=1)
        for k in ks:
            col = best[:, min(k, best.shape[1]) - 1]
            hits[k] += (col[None, :] >= thr[:, None]).sum(axis=1)
    return {k: (hits[k] / len(gt_videos)).tolist() for k in ks}


def evaluate_detection(gt: Sequence[Mapping], preds: Sequence[Mapping],
                       tious: Sequence[float] = ANET_TIOUS,
                       ks: Sequence[int] = RECALL_KS) -> dict:
    """Full ActivityNet detection evaluation.

    ``gt`` rows: ``{"video", "label", "start", "end"}``; ``preds`` rows additionally ``"score"``.
    Returns ``{"tious": [...], "mAP": [per tIoU], "average_mAP": float,
    "per_class": {label: [AP per tIoU]}, "recall_at_k": {k: [recall per tIoU]},
    "counts": {"videos", "ground_truth", "predictions", "classes", "ground_truth_per_class"}}``. Classes are the labels present
    in ``gt`` (sorted by their string form); predictions with other labels are ignored for mAP but
    take part in the class-agnostic recall. Predictions on videos without ground truth are false
    positives for their class.
    """
    thr = [float(t) for t in tious]
    if not thr:
        raise LosaError("no tIoU thresholds given")
    gt_by_label: dict[Hashable, list[Mapping]] = defaultdict(list)
    for i, row in enumerate(gt):
        if "label" not in row:
            raise LosaError(f"ground truth #{i} is missing field 'label'")
        gt_by_label[row["label"]].append(row)
    pred_by_label: dict[Hashable, list[Mapping]] = defaultdict(list)
    for i, row in enumerate(preds):
        if "label" not in row:
            raise LosaError(f"prediction #{i} is missing field 'label'")
        pred_by_label[row["label"]].append(row)
    labels = sorted(gt_by_label, key=str)
    per_class = {
        label: average_precision_detection(gt_by_label[label], pred_by_label.get(label, []),
                                           thr).tolist()
        for label in labels
    }
    if labels:
        mean_ap = np.mean(np.asarray([per_class[c] for c in labels]), axis=0)
    else:
        mean_ap = np.zeros(len(thr))
    return {
        "tious": thr,
        "mAP": mean_ap.tolist(),
        "average_mAP": float(np.mean(mean_ap)),
        "per_class": per_class,
        "recall_at_k": recall_at_k(gt, preds, thr, ks),
        "counts": {
            "videos": len({row["video"] for row in gt}),
            "ground_truth": len(gt),
            "predictions": len(preds),
            "classes": len(labels),
            "ground_truth_per_class": {label: len(gt_by_label[label]) for label in labels},
        },
    }
