"""`losa-eval` with external video-level classifier scores (ActivityNet protocol)."""

from __future__ import annotations

import json
from pathlib import Path

from click.testing import CliRunner

from pipeline.cli_eval import main

CLASSES = ["Jump", "Run", "Swim"]


def _setup(tmp_path: Path) -> tuple[Path, Path, Path]:
    ann = {"classes": CLASSES, "database": {
        "a": {"subset": "validation", "duration": 50.0,
              "annotations": [{"label": "Jump", "segment": [1, 5]}]},
        "b": {"subset": "validation", "duration": 50.0,
              "annotations": [{"label": "Swim", "segment": [10, 20]}]}}}
    dets = {"version": "t", "results": {
        "a": [{"label": "action", "score": 0.81, "segment": [1, 5]}],
        "b": [{"label": "action", "score": 0.25, "segment": [10, 20]}]}}
    scores = {"class": CLASSES, "results": {"v_a": [0.64, 0.36, 0.0], "v_b": [0.2, 0.0, 0.8]}}
    paths = []
    for name, data in (("ann.json", ann), ("dets.json", dets), ("scores.json", scores)):
        (tmp_path / name).write_text(json.dumps(data))
        paths.append(tmp_path / name)
    return tuple(paths)


def test_results_file_fused_with_classifier_scores(tmp_path):
    ann, dets, scores = _setup(tmp_path)
    runner = CliRunner()
    plain = runner.invoke(main, ["--results", str(dets), "--annotations", str(ann)])
    assert plain.exit_code != 0 and "'action'" in plain.output          # labels need fusion
    out = tmp_path / "fused.json"
    res = runner.invoke(main, ["--results", str(dets), "--annotations", str(ann), "--classifier-scores",
                               str(scores), "--predictions-out", str(out), "--out", str(tmp_path / "m.json")])
    assert res.exit_code == 0, res.output
    metrics = json.loads((tmp_path / "m.json").read_text())
    assert metrics["average_mAP"] == 1.0                              # the top class is right for both
    fused = json.loads(out.read_text())["results"]
    # hand-worked: a: sqrt(0.64*0.81)=0.72 Jump, sqrt(0.36*0.81)=0.54 Run; b: sqrt(0.8*0.25)=0.4472 Swim
    assert [(d["label"], round(d["score"], 4)) for d in fused["a"]] == [("Jump", 0.72), ("Run", 0.54)]
    assert [(d["label"], round(d["score"], 4)) for d in fused["b"]] == [("Swim", 0.4472), ("Jump", 0.2236)]
    res = runner.invoke(main, ["--predictions", str(dets), "--annotations", str(ann), "--classifier-scores",
                               str(scores), "--fusion-topk", "1", "--fusion-formula", "product",
                               "--predictions-out", str(out)])
    assert res.exit_code == 0, res.output
    fused = json.loads(out.read_text())["results"]
    assert [(d["label"], round(d["score"], 4)) for d in fused["b"]] == [("Swim", 0.2)]


def test_fusion_errors_are_one_line(tmp_path):
    ann, dets, scores = _setup(tmp_path)
    (tmp_path / "bad.json").write_text(json.dumps({"class": ["Fly"], "results": {"a": [1], "b": [1]}}))
    res = CliRunner().invoke(main, ["--results", str(dets), "--annotations", str(ann),
                                    "--classifier-scores", str(tmp_path / "bad.json")])
    assert res.exit_code != 0 and "'Fly' is not a class of the annotations" in res.output
    assert "Traceback" not in res.output
    run = tmp_path / "run"
    run.mkdir()
    (run / "run.json").write_text(json.dumps({"store_provenance": {}, "classes": ["action"],
                                              "model_cfg": {}, "train_cfg": {"class_agnostic": True},
                                              "store": "x", "annotations": str(ann)}))
    res = CliRunner().invoke(main, ["--run", str(run)])
    assert res.exit_code != 0 and "class-agnostic: pass --classifier-scores" in res.output
