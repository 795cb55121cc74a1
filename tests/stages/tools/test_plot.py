"""Timeline and training-curve figures: valid PNGs whose pixels show what was asked for."""

from __future__ import annotations

import csv
import json
from pathlib import Path

import numpy as np
import pytest
from matplotlib.colors import to_rgb
from matplotlib.image import imread

from stages.tools.plot import (
    DET_COLOUR,
    GT_COLOUR,
    load_metrics,
    plot_timeline,
    plot_training_curves,
    select_detections,
)

PNG_MAGIC = b"\x89PNG\r\n\x1a\n"
DETS = [
    {"label": "jump", "score": 0.92, "segment": [1.0, 3.0]},
    {"label": "run", "score": 0.35, "segment": [2.0, 5.5]},
    {"label": "jump", "score": 0.05, "segment": [6.0, 7.5]},
    {"label": "swim", "score": 0.6, "segment": [8.0, 9.5]},
]
GT = [(1.2, 3.1, "jump"), (2.0, 4.8, "run")]


def _pixels(path: Path) -> np.ndarray:
    assert path.read_bytes()[:8] == PNG_MAGIC
    return imread(path)[..., :3]


def _count_colour(img: np.ndarray, colour: str, tol: float = 0.02) -> int:
    return int((np.abs(img - np.asarray(to_rgb(colour))) < tol).all(axis=-1).sum())


def test_select_detections_filters_sorts_and_validates() -> None:
    kept = select_detections(DETS, top_k=2, min_score=0.1)
    assert [d["score"] for d in kept] == [0.92, 0.6]
    assert len(select_detections(DETS, top_k=None)) == 4
    assert select_detections(DETS, min_score=0.99) == []
    with pytest.raises(ValueError, match="detection 1"):
        select_detections([DETS[0], {"label": "x", "score": 0.5}])


def test_timeline_draws_ground_truth_and_detections(tmp_path: Path) -> None:
    with_gt = plot_timeline(tmp_path / "a.png", 10.0, DETS, GT, ["run", "jump", "swim"], "video a")
    img = _pixels(with_gt)
    assert img.std() > 0.05  # not a blank canvas
    # a legend patch is ~250 pixels; a bar of 2 s on a 10 s axis several thousand
    assert _count_colour(img, GT_COLOUR) > 1000  # ground-truth bars
    assert _count_colour(img, DET_COLOUR) > 1000  # the best detection is drawn fully opaque

    no_gt = _pixels(plot_timeline(tmp_path / "b.png", 10.0, DETS, None, ["run", "jump", "swim"]))
    assert _count_colour(no_gt, GT_COLOUR) == 0
    assert _count_colour(no_gt, DET_COLOUR) > 1000


def test_timeline_rows_follow_classes_and_filters(tmp_path: Path) -> None:
    one_row = _pixels(plot_timeline(tmp_path / "one.png", 10.0, DETS, None, None, top_k=1))
    three_rows = _pixels(plot_timeline(tmp_path / "three.png", 10.0, DETS, None, None, top_k=10))
    assert three_rows.shape[0] > one_row.shape[0]  # one row per class shown
    assert _count_colour(one_row, DET_COLOUR) > 1000
    # nothing left after filtering: still a valid figure, no detection bars
    empty = _pixels(plot_timeline(tmp_path / "empty.png", 10.0, DETS, None, None, min_score=0.95))
    assert 0 < _count_colour(empty, DET_COLOUR) < 400  # only the legend patch
    # unknown duration: the axis ends at the last segment; the file is replaced atomically
    path = plot_timeline(tmp_path / "empty.png", None, DETS[:1], [(0.5, 2.0, "jump")])
    assert path == tmp_path / "empty.png" and not list(tmp_path.glob(".*.tmp"))


def _history() -> list[dict]:
    return [{"epoch": e, "iterations": 10 * e, "loss": 2.0 / e, "cls_loss": 1.5 / e,
             "reg_loss": 0.5 / e, "lr": 1e-4 * (1 - e / 6), "seconds": 1.0} for e in range(1, 6)]


def test_training_curves_from_csv_and_json(tmp_path: Path) -> None:
    rows = _history()
    rows[-1]["val_mAP"] = 0.42
    csv_path = tmp_path / "metrics.csv"
    with open(csv_path, "w", newline="") as fh:
        writer = csv.DictWriter(fh, fieldnames=[*rows[0], "val_mAP"], restval="")
        writer.writeheader()
        writer.writerows(rows)
    loaded = load_metrics(tmp_path)  # a run directory reads metrics.csv
    assert [r["epoch"] for r in loaded] == [1, 2, 3, 4, 5]
    assert np.isnan(loaded[0]["val_mAP"]) and loaded[-1]["val_mAP"] == pytest.approx(0.42)
    with_val = _pixels(plot_training_curves(csv_path, tmp_path / "curves_csv.png", title="run"))
    json_path = tmp_path / "train_metrics.json"
    json_path.write_text(json.dumps(_history()))
    without_val = _pixels(plot_training_curves(json_path, tmp_path / "curves_json.png"))
    assert with_val.std() > 0.05 and without_val.std() > 0.05
    assert with_val.shape[1] > without_val.shape[1]  # the extra validation panel


def test_training_curves_errors(tmp_path: Path) -> None:
    with pytest.raises(FileNotFoundError, match="nothing.csv"):
        plot_training_curves(tmp_path / "nothing.csv", tmp_path / "x.png")
    bad = tmp_path / "bad.json"
    bad.write_text(json.dumps([{"loss": 1.0}]))
    with pytest.raises(ValueError, match="row 1 has no 'epoch'"):
        plot_training_curves(bad, tmp_path / "x.png")
    bad.write_text(json.dumps([]))
    with pytest.raises(ValueError, match="no per-epoch rows"):
        load_metrics(bad)
    with pytest.raises(ValueError, match="no loss column"):
        plot_training_curves([{"epoch": 1, "lr": 0.1}], tmp_path / "x.png")
    assert not (tmp_path / "x.png").exists()
