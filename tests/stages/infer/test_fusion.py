"""Classifier-scores files (CUHK / OpenTAD layout and variants) and fusion of results files."""

import json
from pathlib import Path

import numpy as np
import pytest

from stages.infer.fusion import (ClassifierScoresError, FusionSettings, fuse_results,
                                 load_classifier_scores)

RESULTS = {"version": "x", "results": {
    "vid_a": [{"label": "action", "score": 0.81, "segment": [1.0, 2.0]},
              {"label": "action", "score": 0.25, "segment": [3.0, 5.0]}],
    "vid_b": []}, "external_data": {"run": "r"}}


def _write(tmp_path, payload, name="scores.json"):
    path = tmp_path / name
    path.write_text(json.dumps(payload))
    return path


def test_cuhk_layout_fused_top2_sqrt(tmp_path):
    path = _write(tmp_path, {"class": ["Run", "Jump", "Swim"],
                             "results": {"v_vid_a": [0.10, 0.64, 0.36], "vid_b": [1, 0, 0]}})
    scores = load_classifier_scores(path)
    out = fuse_results(RESULTS, scores, FusionSettings(topk=2, formula="sqrt"))
    got = [(d["label"], round(d["score"], 6), d["segment"]) for d in out["results"]["vid_a"]]
    assert got == [("Jump", 0.72, [1.0, 2.0]), ("Swim", 0.54, [1.0, 2.0]),
                   ("Jump", 0.4, [3.0, 5.0]), ("Swim", 0.3, [3.0, 5.0])]
    assert out["results"]["vid_b"] == []
    assert out["external_data"]["run"] == "r"
    assert out["external_data"]["fusion"]["topk"] == 2
    assert RESULTS["results"]["vid_a"][0]["label"] == "action"     # input untouched


def test_mapping_rows_and_class_order_from_annotations(tmp_path):
    path = _write(tmp_path, {"results": {"vid_a": {"Swim": 0.9, "Run": 0.1}, "vid_b": {"Run": 1}}})
    scores = load_classifier_scores(path, classes=["Run", "Jump", "Swim"])
    assert scores.classes == ["Run", "Jump", "Swim"]
    assert scores.lookup("vid_a").tolist() == [0.1, 0.0, 0.9]
    out = fuse_results(RESULTS, scores, FusionSettings(topk=1, formula="product"))
    assert [d["label"] for d in out["results"]["vid_a"]] == ["Swim", "Swim"]
    # lists without a class list use the given order; no wrapper is fine too
    bare = _write(tmp_path, {"vid_a": [0.0, 1.0, 0.0]}, "bare.json")
    assert load_classifier_scores(bare, ["a", "b", "c"]).lookup("v_vid_a").tolist() == [0, 1, 0]


@pytest.mark.parametrize("payload,match", [
    ({"results": {"vid_a": [0.1, 0.2]}}, "need a class list"),
    ({"class": ["a", "b"], "results": {"vid_a": [0.1]}}, "video vid_a: 1 scores but 2 classes"),
    ({"class": ["a"], "results": {"vid_a": ["x"]}}, "video vid_a: scores are not numbers"),
    ({"class": ["a"], "results": {}}, "no per-video scores"),
])
def test_bad_files_name_the_item(tmp_path, payload, match):
    with pytest.raises(ClassifierScoresError, match=match):
        load_classifier_scores(_write(tmp_path, payload))


def test_missing_video_and_unknown_class(tmp_path):
    scores = load_classifier_scores(_write(tmp_path, {"class": ["Run"], "results": {"vid_a": [1]}}))
    with pytest.raises(ClassifierScoresError, match="no scores for video vid_b"):
        fuse_results(RESULTS, scores)
    with pytest.raises(ClassifierScoresError, match="'Run' is not a class of the annotations"):
        fuse_results(RESULTS, scores, known_classes=["Jump"])
    with pytest.raises(ValueError, match="formula"):
        FusionSettings(formula="mean")


def test_negative_scores_need_softmax_for_sqrt(tmp_path):
    scores = load_classifier_scores(_write(tmp_path, {"class": ["Run", "Jump"],
                                                      "results": {"vid_a": [-1.0, 2.0], "vid_b": [0, 0]}}))
    with pytest.raises(ClassifierScoresError, match="video vid_a has negative class scores"):
        fuse_results(RESULTS, scores)
    out = fuse_results(RESULTS, scores, FusionSettings(topk=1, softmax=True))
    assert out["results"]["vid_a"][0]["label"] == "Jump"


def test_fuse_predictions_reads_the_results_file(tmp_path):
    from stages.infer.fusion import fuse_predictions

    dets = _write(tmp_path, RESULTS, "dets.json")
    scores = _write(tmp_path, {"results": {"vid_a": [0.2, 0.8], "vid_b": [1, 0]}})
    out = fuse_predictions(dets, scores, FusionSettings(topk=1), classes=["Run", "Jump"])
    assert [d["label"] for d in out["results"]["vid_a"]] == ["Jump", "Jump"]


def test_matches_actionformer_postprocess_results():
    """tests/golden/actionformer_fusion.json: ActionFormer's fusion (top-2, sqrt, num_pred 5)."""
    from stages.infer.fusion import ClassifierScores

    golden = json.loads((Path(__file__).resolve().parents[2] / "golden" / "actionformer_fusion.json")
                        .read_text())
    scores = ClassifierScores(golden["classes"], {v: np.asarray(s) for v, s in golden["class_scores"].items()})
    out = fuse_results({"results": golden["detections"]}, scores,
                       FusionSettings(topk=golden["topk"], max_segments=golden["num_pred"]))
    ours = sorted((v, round(d["segment"][0], 9), round(d["segment"][1], 9), d["label"], round(d["score"], 9))
                  for v, dets in out["results"].items() for d in dets)
    ref = sorted((v, round(s, 9), round(e, 9), lab, round(sc, 9)) for v, s, e, lab, sc in golden["fused"])
    assert ours == ref
