"""ActivityNet detection AP: hand-computed cases and an independent re-implementation."""

from __future__ import annotations

import numpy as np
import pytest

from losa.metrics.detection import (
    ANET_TIOUS,
    THUMOS14_TIOUS,
    average_precision_detection,
    evaluate_detection,
    interpolated_prec_rec,
    parse_tious,
    recall_at_k,
    resolve_tious,
    segment_iou,
    tiou_matrix,
)


def gt_row(video, start, end, label="a"):
    return {"video": video, "label": label, "start": start, "end": end}


def pred_row(video, start, end, score, label="a"):
    return {"video": video, "label": label, "start": start, "end": end, "score": score}


# --------------------------------------------------------------------------------- tIoU


def test_segment_iou_values():
    out = segment_iou([0.0, 10.0], np.array([[0, 10], [5, 15], [10, 20], [2, 4], [-5, 20]]))
    np.testing.assert_allclose(out, [1.0, 5 / 15, 0.0, 0.2, 10 / 25])


def test_segment_iou_zero_length_is_zero_not_nan():
    out = segment_iou([3.0, 3.0], np.array([[3.0, 3.0], [0.0, 10.0]]))
    np.testing.assert_array_equal(out, [0.0, 0.0])


def test_tiou_matrix_matches_segment_iou():
    rng = np.random.default_rng(0)
    a = np.sort(rng.uniform(0, 50, (7, 2)), axis=1)
    b = np.sort(rng.uniform(0, 50, (5, 2)), axis=1)
    m = tiou_matrix(a, b)
    assert m.shape == (7, 5)
    for i in range(7):
        np.testing.assert_allclose(m[i], segment_iou(a[i], b))


def test_interpolated_prec_rec_uses_envelope():
    # precision dips then recovers: envelope takes the later, higher value
    ap = interpolated_prec_rec(np.array([1.0, 0.5, 2 / 3]), np.array([1 / 3, 1 / 3, 2 / 3]))
    assert ap == pytest.approx(1 / 3 + 1 / 3 * 2 / 3)


# ------------------------------------------------------------------------- AP, hand-made


def test_perfect_predictions_give_ap_one_everywhere():
    gt = [gt_row("v1", 0, 10), gt_row("v1", 20, 30), gt_row("v2", 5, 6)]
    preds = [pred_row(g["video"], g["start"], g["end"], 0.9 - 0.1 * i) for i, g in enumerate(gt)]
    np.testing.assert_allclose(average_precision_detection(gt, preds, ANET_TIOUS), 1.0)
    res = evaluate_detection(gt, preds, THUMOS14_TIOUS)
    assert res["mAP"] == pytest.approx([1.0] * 5) and res["average_mAP"] == pytest.approx(1.0)
    assert res["recall_at_k"][1] == pytest.approx([2 / 3] * 5)   # v1 has 2 GT, top-1 finds 1
    assert res["recall_at_k"][5] == pytest.approx([1.0] * 5)


def test_tp_fp_tp_with_three_gt():
    gt = [gt_row("v", 0, 10), gt_row("v", 20, 30), gt_row("v", 40, 50)]
    preds = [pred_row("v", 0, 10, 0.9), pred_row("v", 60, 70, 0.8), pred_row("v", 20, 30, 0.7)]
    ap = average_precision_detection(gt, preds, [0.5])
    # precision 1, .5, .667 at recall 1/3, 1/3, 2/3 → envelope: 1/3*1 + 1/3*2/3
    assert ap[0] == pytest.approx(0.5556, abs=1e-4)


def test_duplicate_detection_is_false_positive():
    gt = [gt_row("v", 0, 10), gt_row("v", 20, 30)]
    preds = [pred_row("v", 0, 10, 0.9), pred_row("v", 0.5, 10, 0.8), pred_row("v", 20, 30, 0.7)]
    # TP, FP (GT already taken), TP → 0.5*1 + 0.5*2/3
    assert average_precision_detection(gt, preds, [0.5])[0] == pytest.approx(0.5 + 1 / 3)


def test_ground_truth_visited_by_decreasing_tiou():
    gt = [gt_row("v", 0, 10), gt_row("v", 3, 10)]
    # p1 overlaps both (A .7, B 1.0) and must take B; p2 only reaches A (.5) → both TP
    preds = [pred_row("v", 3, 10, 0.9), pred_row("v", 0, 5, 0.8)]
    assert average_precision_detection(gt, preds, [0.5])[0] == pytest.approx(1.0)


def test_threshold_dependence():
    gt = [gt_row("v", 0, 10)]
    preds = [pred_row("v", 0, 6, 0.9)]                     # tIoU 0.6
    np.testing.assert_allclose(average_precision_detection(gt, preds, [0.5, 0.6, 0.7]),
                               [1.0, 1.0, 0.0])


def test_no_cross_video_matches():
    gt = [gt_row("a", 0, 10)]
    preds = [pred_row("b", 0, 10, 0.9)]
    np.testing.assert_array_equal(average_precision_detection(gt, preds, ANET_TIOUS), 0.0)
    # a prediction on a video without GT lowers precision of the class
    preds = [pred_row("b", 0, 10, 0.9), pred_row("a", 0, 10, 0.8)]
    assert average_precision_detection(gt, preds, [0.5])[0] == pytest.approx(0.5)


def test_equal_scores_keep_input_order():
    gt = [gt_row("v", 0, 10)]
    fp_first = [pred_row("v", 50, 60, 0.5), pred_row("v", 0, 10, 0.5)]
    tp_first = [pred_row("v", 0, 10, 0.5), pred_row("v", 50, 60, 0.5)]
    assert average_precision_detection(gt, fp_first, [0.5])[0] == pytest.approx(0.5)
    assert average_precision_detection(gt, tp_first, [0.5])[0] == pytest.approx(1.0)


def test_class_without_predictions_scores_zero_and_counts_in_map():
    gt = [gt_row("v", 0, 10, "a"), gt_row("v", 20, 30, "b")]
    preds = [pred_row("v", 0, 10, 0.9, "a"), pred_row("v", 20, 30, 0.9, "zzz")]
    res = evaluate_detection(gt, preds, [0.5])
    assert res["per_class"] == {"a": [1.0], "b": [0.0]}
    assert res["mAP"] == [0.5] and res["average_mAP"] == pytest.approx(0.5)
    assert res["counts"]["classes"] == 2 and res["counts"]["ground_truth_per_class"]["b"] == 1
    # the unknown-class prediction still counts for class-agnostic recall
    assert res["recall_at_k"][5] == [1.0]


def test_no_predictions_at_all():
    res = evaluate_detection([gt_row("v", 0, 10)], [], [0.5, 0.7])
    assert res["mAP"] == [0.0, 0.0] and res["recall_at_k"][100] == [0.0, 0.0]


def test_recall_at_k_is_class_agnostic_top_k():
    gt = [gt_row("v", 0, 10, "a"), gt_row("v", 20, 30, "b"), gt_row("w", 0, 5, "a")]
    preds = [pred_row("v", 0, 10, 0.9, "b"),     # wrong class, still recalls GT 0
             pred_row("v", 40, 50, 0.8, "a"),
             pred_row("v", 20, 30, 0.7, "a"),
             pred_row("w", 0, 5, 0.1, "a")]
    rec = recall_at_k(gt, preds, [0.5], ks=(1, 2, 3))
    assert rec == {1: [pytest.approx(2 / 3)], 2: [pytest.approx(2 / 3)], 3: [pytest.approx(1.0)]}


def test_invalid_rows_raise_clear_errors():
    with pytest.raises(ValueError, match="end 1.0 < start 5.0"):
        average_precision_detection([gt_row("v", 0, 1)], [pred_row("v", 5, 1, 0.3)], [0.5])
    with pytest.raises(ValueError, match="missing field 'score'"):
        average_precision_detection([gt_row("v", 0, 1)], [gt_row("v", 0, 1)], [0.5])
    with pytest.raises(ValueError, match="not finite"):
        average_precision_detection([gt_row("v", 0, 1)], [pred_row("v", 0, 1, np.nan)], [0.5])
    with pytest.raises(ValueError, match="missing field 'label'"):
        evaluate_detection([{"video": "v", "start": 0, "end": 1}], [], [0.5])


# ------------------------------------------------------------------ tIoU specs / presets


def test_parse_tious_and_presets():
    assert parse_tious("0.3:0.1:0.7") == THUMOS14_TIOUS
    assert parse_tious("0.5:0.05:0.95") == ANET_TIOUS
    assert len(ANET_TIOUS) == 10 and ANET_TIOUS[-1] == 0.95
    assert parse_tious("0.5, 0.75,0.95") == (0.5, 0.75, 0.95)
    assert resolve_tious(preset="thumos14") == THUMOS14_TIOUS
    assert resolve_tious() == ANET_TIOUS
    assert resolve_tious([0.5, 0.7]) == (0.5, 0.7)
    for bad in ("0.3:0.1", "a,b", "0:0.1:0.5", "0.5:0:0.9", "0.7:0.1:0.3", "1.5", ""):
        with pytest.raises(ValueError, match="invalid tIoU spec"):
            parse_tious(bad)
    with pytest.raises(ValueError, match="unknown tIoU preset 'coco'"):
        resolve_tious(preset="coco")
    with pytest.raises(ValueError, match="not both"):
        resolve_tious("0.5", "anet")


# ---------------------------------------------------- independent re-implementation check


def reference_ap(gt, preds, thr):
    """Plain-loop transcription of the ActivityNet algorithm, with AP written as the mean over
    ground truths of the best precision at or after the rank where each one is recalled."""
    order = sorted(range(len(preds)), key=lambda i: -preds[i]["score"])   # sorted() is stable
    taken = set()
    precisions_at_tp = []
    tp = fp = 0
    flags = []
    for i in order:
        p = preds[i]
        cands = []
        for j, g in enumerate(gt):
            if g["video"] != p["video"]:
                continue
            inter = max(0.0, min(p["end"], g["end"]) - max(p["start"], g["start"]))
            union = (p["end"] - p["start"]) + (g["end"] - g["start"]) - inter
            cands.append((inter / union if union > 0 else 0.0, j))
        cands.sort(key=lambda c: -c[0])
        hit = next((j for iou, j in cands if iou >= thr and j not in taken), None)
        if hit is None:
            fp += 1
            flags.append(False)
        else:
            taken.add(hit)
            tp += 1
            flags.append(True)
        precisions_at_tp.append(tp / (tp + fp))
    total = 0.0
    for r, is_tp in enumerate(flags):
        if is_tp:
            total += max(precisions_at_tp[r:])
    return total / len(gt) if gt else 0.0


def random_problem(rng, n_videos=6, n_classes=3):
    gt, preds = [], []
    for v in range(n_videos):
        for _ in range(rng.integers(0, 6)):
            s = float(rng.uniform(0, 90))
            gt.append(gt_row(f"v{v}", s, s + float(rng.uniform(1, 15)), f"c{rng.integers(n_classes)}"))
        for _ in range(rng.integers(0, 15)):
            s = float(rng.uniform(0, 90))
            preds.append(pred_row(f"v{v}", s, s + float(rng.uniform(0.5, 15)),
                                  float(rng.uniform()), f"c{rng.integers(n_classes)}"))
    # near-copies of GT make high-tIoU matches and duplicates likely
    for g in gt:
        for _ in range(rng.integers(0, 3)):
            jit = rng.normal(0, 1.0, 2)
            s, e = sorted((g["start"] + jit[0], g["end"] + jit[1]))
            preds.append(pred_row(g["video"], s, e, float(rng.uniform()), g["label"]))
    return gt, preds


@pytest.mark.parametrize("seed", [0, 1, 2, 3])
def test_matches_independent_reimplementation(seed):
    rng = np.random.default_rng(seed)
    gt, preds = random_problem(rng)
    thr = [0.1, 0.3, 0.5, 0.7, 0.9]
    res = evaluate_detection(gt, preds, thr)
    labels = sorted({g["label"] for g in gt})
    assert sorted(res["per_class"]) == labels
    for label in labels:
        g = [x for x in gt if x["label"] == label]
        p = [x for x in preds if x["label"] == label]
        expected = [reference_ap(g, p, t) for t in thr]
        np.testing.assert_allclose(res["per_class"][label], expected, rtol=0, atol=1e-12)
    np.testing.assert_allclose(res["mAP"], np.mean([res["per_class"][c] for c in labels], axis=0))
