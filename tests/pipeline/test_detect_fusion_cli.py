"""`losa-detect --classifier-scores`: the CLI relabels a class-agnostic run's detections."""

from __future__ import annotations

import json
from pathlib import Path

from click.testing import CliRunner

import stages.infer.detect as detect_mod
from pipeline.cli_detect import main


def _payload() -> dict:
    return {"version": "losa-detect-1",
            "results": {"clip": [{"label": "action", "score": 0.81, "segment": [1.0, 2.0]}]},
            "external_data": {"classes": ["action"], "videos": {"clip": {"duration": 5.0}}}}


def _run(tmp_path: Path) -> Path:
    run = tmp_path / "run"
    run.mkdir()
    (run / "run.json").write_text(json.dumps({
        "store_provenance": {}, "classes": ["action"], "dataset_classes": ["Jump", "Run", "Swim"],
        "model_cfg": {}, "train_cfg": {"class_agnostic": True}}))
    return run


def test_detect_fuses_with_classifier_scores(tmp_path, monkeypatch):
    run = _run(tmp_path)
    seen = {}

    def fake_detect(videos, run_dir, out_json=None, **kw):
        seen["out_json"] = out_json
        return _payload()

    monkeypatch.setattr(detect_mod, "detect", fake_detect)
    video = tmp_path / "clip.mp4"
    video.write_bytes(b"")
    scores = tmp_path / "scores.json"
    scores.write_text(json.dumps({"results": {"clip": [0.64, 0.0, 0.36]}}))   # class order: the run's
    out = tmp_path / "det.json"
    res = CliRunner().invoke(main, [str(video), "--run", str(run), "--out", str(out),
                                    "--classifier-scores", str(scores), "--min-score", "0"])
    assert res.exit_code == 0, res.output
    assert seen["out_json"] is None                       # the fused results are written instead
    dets = json.loads(out.read_text())["results"]["clip"]
    assert [(d["label"], round(d["score"], 4)) for d in dets] == [("Jump", 0.72), ("Swim", 0.54)]
    assert "Jump" in res.output and "action" not in res.output.split("\n", 1)[1]

    res = CliRunner().invoke(main, [str(video), "--run", str(run)])
    assert res.exit_code == 0 and "class-agnostic" in res.output
