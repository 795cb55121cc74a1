"""`losa-bench nms` on tiny inputs (without an ActionFormer checkout), and its one-line errors."""

from __future__ import annotations

from click.testing import CliRunner

from pipeline.cli_bench import main
from stages.tools.bench_nms import bench_nms, synthetic_candidates, to_markdown


def test_bench_runs_without_actionformer_and_reports_each_method() -> None:
    res = bench_nms(None, num_videos=2, candidates=120, classes=3, steps=64, repeats=1, greedy=True)
    for case in ("nms_multiclass", "nms_agnostic_voting"):
        assert set(res[case]["ms"]) == {"ours", "ours (greedy loop)"}
        assert all(v > 0 for v in res[case]["ms"].values())
    assert "| multiclass |" in to_markdown(res)
    segs, scores, labels = synthetic_candidates(1, 50, 4, 64)[0]
    assert segs.shape == (50, 2) and (segs[:, 1] >= segs[:, 0]).all() and scores.min() > 1e-3


def test_cli_errors_are_one_line(tmp_path) -> None:
    res = CliRunner().invoke(main, ["nms", "--actionformer", str(tmp_path), "--videos", "1"])
    assert res.exit_code == 2 and "not an ActionFormer checkout" in res.output
    (tmp_path / "libs" / "utils").mkdir(parents=True)
    (tmp_path / "libs" / "utils" / "nms.py").write_text("")
    res = CliRunner().invoke(main, ["nms", "--actionformer", str(tmp_path), "--videos", "1"])
    assert res.exit_code == 2 and "nms_1d_cpu is not built" in res.output
    res = CliRunner().invoke(main, ["nms", "--predict", "--videos", "1"])
    assert res.exit_code == 2 and "needs --actionformer" in res.output
