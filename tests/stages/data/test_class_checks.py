"""Classes are never created silently; duplicate ground-truth segments are counted and the
evaluator convention is a choice (stages/data/checks.py)."""

from __future__ import annotations

import json
import warnings

import pytest
from click.testing import CliRunner

from pipeline.cli_eval import main as eval_main
from stages.data.annotations import AnnotationError, load_annotations
from stages.data.checks import PartialClassError, find_duplicates, require_trained_classes
from stages.evaluate.run import evaluate_files


def thumos_folder(root, typo: bool):
    root.mkdir()
    (root / "Pulse_test.txt").write_text("video_test_1 1.0 2.0\n")
    (root / ("Pluse_val.txt" if typo else "Pulse_val.txt")).write_text("video_validation_1 1.0 2.0\n")
    (root / "Spin_val.txt").write_text("video_validation_1 3.0 4.0\n")
    (root / "Spin_test.txt").write_text("video_test_1 3.0 5.0\n")
    (root / "Ambiguous_test.txt").write_text("video_test_1 6.0 7.0\n")
    return root


def anet_json(path, test_only_label: bool, duplicate: bool = False):
    train = [{"label": "run", "segment": [1.0, 2.0]}]
    if duplicate:
        train += [{"label": "run", "segment": [1.0, 2.0]}, {"label": "run", "segment": [1.0004, 2.0]}]
    db = {"v1": {"subset": "training", "duration": 10.0, "annotations": train},
          "v2": {"subset": "testing", "duration": 10.0,
                 "annotations": [{"label": "jump" if test_only_label else "run", "segment": [3.0, 4.0]}]}}
    path.write_text(json.dumps({"database": db}))
    return path


def test_typo_thumos_class_file_is_refused(tmp_path):
    folder = thumos_folder(tmp_path / "th", typo=True)
    with pytest.raises(AnnotationError, match="Pluse_val.txt has no test counterpart.*--allow-partial-classes"):
        load_annotations(folder)
    ann = load_annotations(folder, allow_partial_classes=True)        # the documented way out
    assert ann.classes == ["Pluse", "Pulse", "Spin"]
    assert load_annotations(thumos_folder(tmp_path / "ok", typo=False)).classes == ["Pulse", "Spin"]


def test_label_seen_only_in_test_subset_is_refused_for_training(tmp_path):
    ann = load_annotations(anet_json(tmp_path / "a.json", test_only_label=True))
    assert ann.classes == ["jump", "run"]                              # derived, as before
    with pytest.raises(PartialClassError, match="'jump' seen only in: testing"):
        require_trained_classes(ann, "training")
    assert require_trained_classes(ann, "training", allow_partial_classes=True) == ["jump"]
    ok = load_annotations(anet_json(tmp_path / "b.json", test_only_label=False))
    assert require_trained_classes(ok, "training") == []


def test_train_refuses_untrained_class(tmp_path):
    from stages.demo.synthetic_store import make_synthetic_store
    from stages.train.run import train

    syn = make_synthetic_store(tmp_path / "s.zarr", num_videos=3, num_steps=24, channels=8, layers=(2, 4),
                               num_classes=2, seed=0, val_videos=1)
    data = json.loads(syn.annotations.read_text())
    data.pop("classes", None)
    val = next(v for v in data["database"].values() if v["subset"] == "validation")
    val["annotations"] = [{"label": "typo_class", "segment": [0.5, 1.0]}]
    bad = tmp_path / "bad.json"
    bad.write_text(json.dumps(data))
    with pytest.raises(PartialClassError, match="typo_class"):
        train(syn.store, bad, tmp_path / "run", {"mode": "head-only"}, {"epochs": 1}, progress=False)
    assert not (tmp_path / "run").exists()                             # refused before anything


def test_duplicates_warned_and_policy_applies(tmp_path):
    path = anet_json(tmp_path / "d.json", test_only_label=False, duplicate=True)
    with pytest.warns(UserWarning, match=r"2 duplicate ground-truth segment\(s\) in 1 video.*kept \(ActivityNet"):
        keep = load_annotations(path)
    assert len(keep.videos["v1"].segments) == 3 and find_duplicates(keep) == {"v1": [1, 2]}
    with pytest.warns(UserWarning, match="dropped \\(ActionFormer"):
        drop = load_annotations(path, duplicates="drop")
    assert len(drop.videos["v1"].segments) == 1
    preds = {"results": {"v1": [{"label": "run", "score": 0.9, "segment": [1.0, 2.0]}]}}
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        ap_keep = evaluate_files(preds, keep, "training", [0.5])["average_mAP"]
        ap_drop = evaluate_files(preds, drop, "training", [0.5])["average_mAP"]
    assert ap_drop == pytest.approx(1.0) and ap_keep == pytest.approx(1 / 3)  # one hit, 3 vs 1 GT


def test_eval_cli_duplicates_option(tmp_path):
    path = anet_json(tmp_path / "d.json", test_only_label=False, duplicate=True)
    preds = tmp_path / "p.json"
    preds.write_text(json.dumps({"results": {"v1": [{"label": "run", "score": 0.9, "segment": [1.0, 2.0]}]}}))
    args = ["--predictions", str(preds), "--annotations", str(path), "--subset", "training", "--tious", "0.5"]
    keep = CliRunner().invoke(eval_main, args)
    drop = CliRunner().invoke(eval_main, [*args, "--duplicates", "drop"])
    assert keep.exit_code == drop.exit_code == 0, keep.output + drop.output
    assert "2 duplicate ground-truth segment(s)" in keep.output and "kept" in keep.output
    assert "dropped" in drop.output and "100.00" in drop.output
    typo = CliRunner().invoke(eval_main, ["--predictions", str(preds), "--annotations",
                                          str(thumos_folder(tmp_path / "th", typo=True)), "--subset", "test"])
    assert typo.exit_code == 1 and "--allow-partial-classes" in typo.output
