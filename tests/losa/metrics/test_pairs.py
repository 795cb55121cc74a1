"""`losa.metrics.pairs.pair_accuracy`: labelling accuracy on a class pair, chance 0.5."""
from __future__ import annotations

import pytest

from losa.errors import LosaError
from losa.metrics.pairs import pair_accuracy

GT = [{"video": "v", "label": "L", "start": 0.0, "end": 10.0},
      {"video": "v", "label": "R", "start": 20.0, "end": 30.0},
      {"video": "w", "label": "L", "start": 0.0, "end": 10.0},
      {"video": "w", "label": "R", "start": 20.0, "end": 30.0},
      {"video": "w", "label": "X", "start": 40.0, "end": 50.0}]


def det(video, label, start, end, score):
    return {"video": video, "label": label, "start": start, "end": end, "score": score}


def test_right_wrong_tied_missed():
    preds = [
        det("v", "L", 0, 10, 0.9), det("v", "R", 0, 10, 0.2),      # v/L right
        det("v", "L", 20, 30, 0.7), det("v", "R", 21, 30, 0.3),    # v/R wrong
        det("w", "L", 0, 10, 0.5), det("w", "R", 0, 10, 0.5),      # w/L tied
        det("w", "R", 35, 45, 0.9), det("w", "L", 40, 50, 0.9),    # w/R missed (no overlap >= 0.5)
        det("v", "X", 0, 10, 1.0),                                 # other classes ignored
    ]
    out = pair_accuracy(GT, preds, ("L", "R"))
    assert (out["right"], out["wrong"], out["tied"], out["missed"], out["instances"]) == (1, 1, 1, 1, 4)
    assert out["accuracy"] == pytest.approx(0.5)


def test_one_label_only_and_tiou_threshold():
    preds = [det("v", "L", 0, 10, 0.1), det("v", "R", 20, 30, 0.1), det("w", "R", 0, 10, 0.9),
             det("w", "R", 24, 30, 0.9)]                           # tIoU 0.6 with w/R
    out = pair_accuracy(GT, preds, ("L", "R"))
    assert (out["right"], out["wrong"], out["missed"]) == (3, 1, 0) and out["accuracy"] == 0.75
    strict = pair_accuracy(GT, preds, ("L", "R"), tiou=0.7)
    assert strict["missed"] == 1 and strict["right"] == 2


def test_all_missed_and_bad_pair():
    assert pair_accuracy(GT, [], ("L", "R"))["accuracy"] is None
    with pytest.raises(LosaError, match="two different labels"):
        pair_accuracy(GT, [], ("L", "L"))
