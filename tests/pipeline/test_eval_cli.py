"""Evaluation stage and the `losa-eval` CLI end to end (click CliRunner)."""

from __future__ import annotations

import json
from pathlib import Path

import click
import pytest
from click.testing import CliRunner

from pipeline.cli_eval import main, run_eval
from pipeline.errors import CliError, handle_user_errors, user_errors
from stages.errors import StageError
from stages.data.annotations import load_annotations
from stages.evaluate.run import (
    PredictionError,
    evaluate_files,
    format_table,
    load_predictions,
    write_metrics,
)


def make_thumos(root: Path) -> Path:
    root.mkdir()
    (root / "Jump_test.txt").write_text("video_test_0000001 1 5\nvideo_test_0000002 10 20\n")
    (root / "Run_test.txt").write_text("video_test_0000001 30 40\n")
    (root / "Ambiguous_test.txt").write_text("video_test_0001292 2 3\n")
    (root / "Jump_val.txt").write_text("video_validation_0000001 2 4\n")
    (root / "Run_val.txt").write_text("")  # every class has a file per split (else: a typo)
    return root


def perfect_results() -> dict:
    return {"version": "t", "external_data": {}, "results": {
        "video_test_0000001": [{"label": "Jump", "score": 0.9, "segment": [1, 5]},
                               {"label": "Run", "score": 0.8, "segment": [30, 40]}],
        "video_test_0000002": [{"label": "Jump", "score": 0.7, "segment": [10, 20]}],
    }}


def dump(path: Path, data) -> Path:
    path.write_text(json.dumps(data))
    return path


# ------------------------------------------------------------------------------- stage


def test_evaluate_perfect_and_misses(tmp_path):
    ann = load_annotations(make_thumos(tmp_path / "th"))
    res = evaluate_files(perfect_results(), ann, "test", [0.5, 0.7])
    assert res["mAP"] == [1.0, 1.0] and res["average_mAP"] == 1.0
    assert res["subset"] == "test" and res["counts"]["videos"] == 3
    # GT video 0000002 without predictions → its Jump instance is a miss
    partial = perfect_results()
    del partial["results"]["video_test_0000002"]
    res = evaluate_files(partial, ann, "testing", [0.5])
    assert res["per_class"] == {"Jump": [0.5], "Run": [1.0]}
    assert res["recall_at_k"][100] == [pytest.approx(2 / 3)]


def test_exclusion_policy_removes_predictions_on_excluded_videos(tmp_path):
    ann = load_annotations(make_thumos(tmp_path / "th"))
    preds = perfect_results()
    preds["results"]["video_test_0001292"] = [{"label": "Jump", "score": 0.95, "segment": [2, 3]}]
    assert evaluate_files(preds, ann, "test", [0.5])["per_class"]["Jump"] == [pytest.approx(2 / 3)]
    res = evaluate_files(preds, ann, "test", [0.5], exclude={"video_test_0001292"})
    assert res["per_class"]["Jump"] == [1.0] and res["excluded"] == ["video_test_0001292"]
    assert res["counts"]["videos"] == 2


def test_videos_absent_from_ground_truth_are_false_positives(tmp_path):
    """As the official evaluator: detections in unannotated videos are scored (false positives),
    with a warning naming the videos; ``strict`` refuses them."""
    ann = load_annotations(make_thumos(tmp_path / "th"))
    stray = perfect_results()
    stray["results"]["video_validation_0000001"] = [{"label": "Jump", "score": 0.95, "segment": [2, 4]}]
    stray["results"]["elsewhere"] = [{"label": "Run", "score": 0.85, "segment": [30, 40]}]
    with pytest.warns(UserWarning, match=r"2 video\(s\) not in subset 'test'.*elsewhere, "
                                         r"video_validation_0000001.*false positives"):
        res = evaluate_files(stray, ann, "test", [0.5])
    # Jump: FP (0.95) ranked before 2 TPs → precision envelope 2/3 at both recalls; Run: FP (0.85)
    # before its TP → 1/2 (without the stray detections both would be 1.0)
    assert res["per_class"]["Jump"] == [pytest.approx(2 / 3)]
    assert res["per_class"]["Run"] == [pytest.approx(1 / 2)]
    assert res["unannotated"] == ["elsewhere", "video_validation_0000001"]
    with pytest.raises(PredictionError, match=r"2 video\(s\) not in subset 'test'.*elsewhere"):
        evaluate_files(stray, ann, "test", [0.5], strict=True)


def test_evaluate_errors(tmp_path):
    ann = load_annotations(make_thumos(tmp_path / "th"))
    bad_label = perfect_results()
    bad_label["results"]["video_test_0000002"][0]["label"] = "Swim"
    with pytest.raises(PredictionError, match="video_test_0000002 .* label 'Swim'"):
        evaluate_files(bad_label, ann, "test", [0.5])
    with pytest.raises(ValueError, match="several subsets \\(test, val\\)"):
        evaluate_files(perfect_results(), ann, None, [0.5])
    with pytest.raises(ValueError, match="subset 'training' not found"):
        evaluate_files(perfect_results(), ann, "training", [0.5])
    no_gt = tmp_path / "a.json"
    dump(no_gt, {"database": {"x": {"subset": "testing", "annotations": []}}})
    with pytest.raises(ValueError, match="no ground-truth segments"):
        evaluate_files({"results": {}}, no_gt, None, [0.5])


@pytest.mark.parametrize("data, message", [
    ({"result": {}}, "missing top-level object 'results'"),
    ({"results": {"v": {}}}, "video v: results are not a list"),
    ({"results": {"v": [{"label": "a", "segment": [0, 1]}]}}, "v prediction #0: missing field 'score'"),
    ({"results": {"v": [{"label": "a", "score": 1, "segment": [0]}]}}, "is not \\[start, end\\]"),
    ({"results": {"v": [{"label": "a", "score": "hi", "segment": [0, 1]}]}}, "are not numbers"),
    ({"results": {"v": [{"label": "a", "score": 1, "segment": [3, 1]}]}}, "end 1.0 < start 3.0"),
])
def test_prediction_file_errors(tmp_path, data, message):
    f = dump(tmp_path / "res.json", data)
    with pytest.raises(PredictionError, match=message) as info:
        load_predictions(f)
    assert "res.json" in str(info.value)


def test_write_metrics_and_table(tmp_path):
    ann = load_annotations(make_thumos(tmp_path / "th"))
    res = evaluate_files(perfect_results(), ann, "test", [0.3, 0.5])
    out = write_metrics(res, tmp_path / "deep" / "metrics.json")
    data = json.loads(out.read_text())
    assert {"tious", "mAP", "average_mAP", "per_class", "recall_at_k"} <= set(data)
    assert data["recall_at_k"]["5"] == [1.0, 1.0] and data["per_class"]["Run"] == [1.0, 1.0]
    assert sorted(p.name for p in out.parent.iterdir()) == ["metrics.json"]   # no temp files
    table = format_table(res)
    assert "Jump" in table and "Run" in table and "0.30" in table and "100.00" in table
    assert table.splitlines()[-1].endswith(": 100.00")


# ---------------------------------------------------------------------------------- CLI


def test_cli_end_to_end(tmp_path):
    th = make_thumos(tmp_path / "th")
    preds = dump(tmp_path / "results.json", perfect_results())
    out = tmp_path / "metrics.json"
    result = CliRunner().invoke(main, ["--predictions", str(preds), "--annotations", str(th),
                                       "--subset", "testing", "--preset", "thumos14",
                                       "--exclude-policy", "actionformer", "--out", str(out)])
    assert result.exit_code == 0, result.output
    assert "Jump" in result.output and "metrics written to" in result.output
    data = json.loads(out.read_text())
    assert data["tious"] == [0.3, 0.4, 0.5, 0.6, 0.7] and data["average_mAP"] == 1.0
    assert run_eval(preds, th, subset="test", tious=[0.5])["mAP"] == [1.0]


def test_cli_custom_tious_and_clip_warning(tmp_path):
    ann = dump(tmp_path / "ann.json", {"database": {"v": {
        "subset": "validation", "duration": 10,
        "annotations": [{"label": "a", "segment": [5, 12]}]}}})
    preds = dump(tmp_path / "res.json", {"results": {"v": [
        {"label": "a", "score": 0.5, "segment": [5, 9]}]}})
    result = CliRunner().invoke(main, ["--predictions", str(preds), "--annotations", str(ann),
                                       "--tious", "0.5:0.1:0.9"])
    assert result.exit_code == 0, result.output
    assert "Warning:" in result.output and "clipped" in result.output
    assert "0.90" in result.output and "0.95" not in result.output     # tIoU 0.8 → 1.0, 0.9 → 0


def test_cli_collapses_many_warnings(tmp_path):
    db = {f"v{i:02d}": {"subset": "testing", "duration": 10,
                        "annotations": [{"label": "a", "segment": [1, 11]}]} for i in range(13)}
    ann = dump(tmp_path / "ann.json", {"database": db})
    preds = dump(tmp_path / "res.json", {"results": {"v00": []}})
    result = CliRunner().invoke(main, ["--predictions", str(preds), "--annotations", str(ann)])
    assert result.exit_code == 0, result.output
    assert result.output.count("clipped to its duration") == 10
    assert "... and 3 more warnings" in result.output


def test_cli_errors_are_one_line(tmp_path):
    th = make_thumos(tmp_path / "th")
    stray = perfect_results()
    stray["results"]["ghost_video"] = []
    preds = dump(tmp_path / "results.json", stray)
    runner = CliRunner()
    result = runner.invoke(main, ["--predictions", str(preds), "--annotations", str(th),
                                  "--subset", "test", "--strict"])
    assert result.exit_code == 1
    assert result.output.strip().startswith("Error:") and "ghost_video" in result.output
    assert len(result.output.strip().splitlines()) == 1
    result = runner.invoke(main, ["--predictions", str(preds), "--annotations", str(th),
                                  "--subset", "test"])
    assert result.exit_code == 0, result.output
    assert "Warning:" in result.output and "ghost_video" in result.output
    result = runner.invoke(main, ["--predictions", str(preds), "--annotations",
                                  str(tmp_path / "nope"), "--subset", "test"])
    assert result.exit_code == 1 and "annotations not found" in result.output
    result = runner.invoke(main, ["--predictions", str(preds), "--annotations", str(th),
                                  "--tious", "0.5", "--preset", "anet"])
    assert result.exit_code == 2 and "mutually exclusive" in result.output
    result = runner.invoke(main, ["--predictions", str(preds), "--annotations", str(th),
                                  "--subset", "test", "--tious", "0.5:x"])
    assert result.exit_code == 1 and "invalid tIoU spec" in result.output


def test_error_helpers():
    @click.command()
    @click.option("--kind")
    @handle_user_errors(exit_code=2)
    def cmd(kind):
        if kind == "value":
            raise StageError("bad value for thing\nsecond line")
        if kind == "file":
            raise FileNotFoundError(2, "No such file or directory", "/x/y")
        raise RuntimeError("a bug")

    runner = CliRunner()
    res = runner.invoke(cmd, ["--kind", "value"])
    assert res.exit_code == 2 and res.output.strip() == "Error: bad value for thing second line"
    res = runner.invoke(cmd, ["--kind", "file"])
    assert res.exit_code == 2 and "/x/y" in res.output
    res = runner.invoke(cmd, ["--kind", "bug"])
    assert isinstance(res.exception, RuntimeError)                 # bugs are not swallowed
    with pytest.raises(CliError, match="oops"):
        with user_errors():
            raise StageError("oops")
    with pytest.raises(ValueError, match="a bug"):                  # a plain ValueError is a bug
        with user_errors():
            raise ValueError("a bug")
