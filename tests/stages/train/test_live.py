"""Training curves via DVCLive (stages/train/live.py) leave any enclosing repository alone."""
from __future__ import annotations

import csv
import json
import shutil
import subprocess

import pytest

from stages.train.live import CurveLog

ROWS = [{"epoch": 1, "loss": 2.0, "lr": 1e-4, "note": "x"}, {"epoch": 2, "loss": 1.0, "lr": 2e-4, "val_mAP": 0.25}]


@pytest.mark.parametrize("commits", [False, True])
def test_curves_inside_a_git_repository_without_dvc(tmp_path, monkeypatch, commits):
    if shutil.which("git") is None:
        pytest.skip("git not installed")
    subprocess.run(["git", "init", "-q", str(tmp_path)], check=True)
    if commits:
        (tmp_path / "a.txt").write_text("a")
        for cmd in (["add", "a.txt"], ["-c", "user.email=t@example.invalid", "-c", "user.name=t", "commit", "-qm", "a"]):
            subprocess.run(["git", *cmd], cwd=tmp_path, check=True)
    monkeypatch.chdir(tmp_path)
    log = CurveLog(tmp_path / "run", ROWS[:1])  # a fresh git repo without commits made dvclive 3 raise
    log.log(ROWS[1])
    log.close()
    assert not (tmp_path / ".dvc").exists() and not (tmp_path / "dvc.yaml").exists()  # no `dvc init`, no dvc.yaml
    with open(tmp_path / "run" / "dvclive" / "plots" / "metrics" / "loss.tsv") as fh:
        assert [(int(r["step"]), float(r["loss"])) for r in csv.DictReader(fh, delimiter="\t")] == [(1, 2.0), (2, 1.0)]
    summary = json.loads((tmp_path / "run" / "dvclive" / "metrics.json").read_text())
    assert summary["step"] == 2 and summary["val_mAP"] == 0.25 and "note" not in summary
