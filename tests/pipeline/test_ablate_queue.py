"""The ablation runner drives DVC's experiment queue and leaves the workspace alone.

Fast tests: command construction, the plan, and parsing of a ``dvc exp show --json`` sample recorded
from real dvc (tests/pipeline/data/exp_show_sample.json; re-record with
``python tests/pipeline/test_ablate_queue.py tests/pipeline/data/exp_show_sample.json``).
Slow test: a scratch git + DVC project with a stand-in pipeline (extract → train → evaluate, same
paths as the demo's), a user's uncommitted params.yaml edit, the whole queue run end to end.
"""
from __future__ import annotations

import json
import shutil
import subprocess
import sys
import textwrap
from pathlib import Path

import click
import pytest

from pipeline import ablate
from pipeline.dvc_exp import exp_name, parse_exp_show, queue_command, run_all_command, show_command

SAMPLE = Path(__file__).parent / "data" / "exp_show_sample.json"

# A stand-in pipeline with the demo's paths: extraction writes data/features.zarr from the extract
# params; "training" turns train params into a score; evaluate writes metrics/eval.json (git-tracked).
_EXTRACT = """
import json, os, yaml
p = yaml.safe_load(open("params.yaml"))["extract"]
os.makedirs("data/features.zarr", exist_ok=True)
json.dump({"size": p["size"]}, open("data/features.zarr/zarr.json", "w"))
"""
_TRAIN = """
import json, os, sys, yaml
p = yaml.safe_load(open("params.yaml"))["train"]
if p["model"] == "broken":
    sys.exit("cannot train a broken model")
score = {"losa": 0.5, "head-only": 0.3, "side": 0.4}[p["model"]] + 0.01 * int(p["seed"])
os.makedirs("runs/demo", exist_ok=True)
json.dump({"score": score}, open("runs/demo/model.json", "w"))
"""
_EVAL = """
import json, os, yaml
params = yaml.safe_load(open("params.yaml"))
subset = params["evaluate"]["subset"]
held = params["evaluate"].get("holdout") is True and params["train"].get("holdout") == 0.25
score = json.load(open("runs/demo/model.json"))["score"] - (0.1 if held else 0.0)
os.makedirs("metrics", exist_ok=True)
json.dump({"tious": [0.3, 0.5], "mAP": [score, score / 2], "average_mAP": 0.75 * score, "subset": subset,
           "per_class": {"move_left": [score, score], "move_right": [1.0, 1.0], "flash": [0.5, 0.5]}},
          open("metrics/eval.json", "w"))
"""
_DVC_YAML = """
stages:
  extract:
    cmd: python extract.py
    deps: [extract.py]
    params: [extract]
    outs: [data/features.zarr]
  train:
    cmd: python train.py
    deps: [train.py, data/features.zarr]
    params: [train]
    outs: [runs/demo]
  evaluate:
    cmd: python evaluate.py
    deps: [evaluate.py, runs/demo]
    params: [evaluate]
    metrics:
      - metrics/eval.json:
          cache: false
"""
_PARAMS = "extract:\n  size: 3\ntrain:\n  model: losa\n  seed: 1\nevaluate:\n  subset: testing\n"


def _sh(cwd: Path, *cmd: str) -> str:
    proc = subprocess.run(list(cmd), cwd=cwd, capture_output=True, text=True, timeout=300)
    assert proc.returncode == 0, f"{cmd}: {proc.stdout}{proc.stderr}"
    return proc.stdout


def make_project(root: Path) -> Path:
    """A committed git + DVC project whose pipeline has been reproduced once (the baseline)."""
    root.mkdir(parents=True, exist_ok=True)
    for name, text in (("extract.py", _EXTRACT), ("train.py", _TRAIN), ("evaluate.py", _EVAL),
                       ("dvc.yaml", _DVC_YAML), ("params.yaml", _PARAMS)):
        (root / name).write_text(textwrap.dedent(text).lstrip())
    _sh(root, "git", "init", "-q")
    _sh(root, "git", "config", "user.email", "test@example.invalid")
    _sh(root, "git", "config", "user.name", "test")
    _sh(root, sys.executable, "-m", "dvc", "init", "-q")
    _sh(root, sys.executable, "-m", "dvc", "config", "core.analytics", "false")
    _sh(root, sys.executable, "-m", "dvc", "repro", "-q")
    _sh(root, "git", "add", "-A")
    _sh(root, "git", "commit", "-q", "-m", "baseline")
    return root


# --------------------------------------------------------------------------------------- fast tests
def test_commands():
    assert queue_command("abl-x", ["train.model=side", "train.seed=3"]) == [
        "dvc", "exp", "run", "--queue", "--name", "abl-x", "--set-param", "train.model=side",
        "--set-param", "train.seed=3"]
    assert run_all_command(2) == ["dvc", "exp", "run", "--run-all", "--jobs", "2"]
    assert show_command() == ["dvc", "exp", "show", "--json"]
    assert show_command("abc123") == ["dvc", "exp", "show", "--json", "--rev", "abc123"]
    with pytest.raises(ValueError, match="KEY=VALUE"):
        queue_command("abl-x", ["train.model"])
    assert exp_name("abl", "LoSA (layer 2 only)", "s7", "20261203-1015") == "abl-losa-layer-2-only-s7-20261203-1015"


def test_plan_adds_seed_and_subset_and_rejects_unknown_variants():
    variants = [("head-only", ["train.model=head-only"]), ("side (AdaTAD-style)", ["train.model=side"])]
    jobs = ablate.plan(variants, only="side (AdaTAD-style)", seeds="1,2", eval_subset="validation", tag="t")
    assert jobs == [
        ("side (AdaTAD-style)", ["train.model=side", "train.seed=1", "evaluate.subset=validation"],
         "abl-side-adatad-style-s1-t"),
        ("side (AdaTAD-style)", ["train.model=side", "train.seed=2", "evaluate.subset=validation"],
         "abl-side-adatad-style-s2-t")]
    held = ablate.plan(variants, only="head-only", holdout=0.25, tag="t")
    assert held == [("head-only", ["train.model=head-only", "++train.holdout=0.25", "++evaluate.holdout=true"],
                     "abl-head-only-t")]
    with pytest.raises(click.UsageError, match="unknown variant"):
        ablate.plan(variants, only="nope")


def test_parse_recorded_exp_show():
    baseline, exps = parse_exp_show(SAMPLE.read_text())
    by = {e.name: e for e in exps}
    assert set(by) == {"abl-head-only-rec", "abl-side-s2-rec", "abl-broken-rec"}
    assert baseline["params"]["train"] == {"model": "losa", "seed": 1}
    ok = by["abl-side-s2-rec"]
    assert ok.ok and ok.params["train"] == {"model": "side", "seed": 2} and ok.baseline == baseline["rev"]
    assert ok.metrics["metrics/eval.json"]["average_mAP"] == pytest.approx(0.75 * 0.42)
    assert ok.outs["data/features.zarr"] == baseline["outs"]["data/features.zarr"] is not None
    assert not by["abl-broken-rec"].ok and by["abl-broken-rec"].state == "failed"
    assert ok.timestamp and len(ok.rev) == 40


def test_table_from_recorded_experiments(monkeypatch):
    baseline, exps = parse_exp_show(SAMPLE.read_text())
    files = {e.rev: {"tious": [0.3, 0.5], "mAP": [0.4, 0.2], "average_mAP": 0.3,
                     "per_class": {"move_left": [0.2, 0.2], "move_right": [0.6, 0.6], "flash": [1.0, 1.0]}}
             for e in exps}
    monkeypatch.setattr(ablate, "read_file_at", lambda rev, path, cwd=None: json.dumps(files[rev]))
    jobs = [("side", ["train.model=side", "train.seed=2"], "abl-side-s2-rec"),
            ("broken", ["train.model=broken"], "abl-broken-rec"),
            ("ghost", ["train.model=side"], "abl-never-queued")]
    text, problems = ablate.table(jobs, baseline, {e.name: e for e in exps}, "metrics/eval.json",
                                  "data/features.zarr", {"abl-side-s2-rec": 7.0})
    lines = text.splitlines()
    assert lines[0].endswith("| seconds | extract reused |") and len(lines) == 3
    assert lines[2] == "| side | `train.model=side` | 40.0 | 20.0 | **30.0** | 20.0 | 60.0 | 100.0 | – | 7 | yes |"
    assert problems[0].startswith("abl-broken-rec: failed (log: ") and problems[1].startswith("abl-never-queued: not")


# ---------------------------------------------------------------------------------------- slow test
@pytest.mark.slow  # 40-75 s: DVC's queue starts a worker and runs each experiment in a temporary clone
def test_queue_run_keeps_uncommitted_edits(tmp_path, monkeypatch):
    if shutil.which("git") is None:
        pytest.skip("git not installed")
    proj = make_project(tmp_path / "proj")
    params = proj / "params.yaml"
    edited = params.read_text().replace("seed: 1", "seed: 4") + "# my uncommitted note\n"
    params.write_text(edited)
    (proj / "notes.txt").write_text("untracked work\n")
    monkeypatch.chdir(proj)
    variants = [("head-only", ["train.model=head-only"]), ("side", ["train.model=side"]),
                ("broken", ["train.model=broken"])]
    jobs = ablate.plan(variants, holdout=0.25, tag="t")  # keys absent from params.yaml: added by ++
    real_run = ablate.run_dvc

    def commit_while_running(cmd, cwd=None):  # the user commits something while the queue runs
        out = real_run(cmd, cwd)
        if "--run-all" in cmd:
            (proj / "later.txt").write_text("committed during the run\n")
            _sh(proj, "git", "add", "later.txt")
            _sh(proj, "git", "commit", "-q", "-m", "later", "--", "later.txt")
        return out

    monkeypatch.setattr(ablate, "run_dvc", commit_while_running)
    baseline, exps, _ = ablate.run_queue(jobs, jobs=1)
    assert params.read_text() == edited and (proj / "notes.txt").read_text() == "untracked work\n"
    assert _sh(proj, "git", "status", "--porcelain").split() == ["M", "params.yaml", "??", "notes.txt"]
    text, problems = ablate.table(jobs, baseline, exps, "metrics/eval.json", "data/features.zarr", {})
    rows = text.splitlines()[2:]
    # the queued experiments ran on the workspace as it was (seed 4), scored on the held-out part
    assert rows[0].startswith(f"| head-only | `train.model=head-only` | {100 * (0.34 - 0.1):.1f} |")
    assert rows[1].startswith(f"| side | `train.model=side` | {100 * (0.44 - 0.1):.1f} |")
    assert all(r.endswith("| – | yes |") for r in rows) and len(rows) == 2
    assert len(problems) == 1 and problems[0].startswith("abl-broken-t: failed")


if __name__ == "__main__":  # record the exp show sample used by the fast tests
    import tempfile

    with tempfile.TemporaryDirectory() as tmp:
        proj = make_project(Path(tmp) / "proj")
        for name, sets in (("abl-head-only-rec", ["train.model=head-only"]),
                           ("abl-side-s2-rec", ["train.model=side", "train.seed=2"]),
                           ("abl-broken-rec", ["train.model=broken"])):
            _sh(proj, sys.executable, "-m", *queue_command(name, sets))
        subprocess.run([sys.executable, "-m", *run_all_command(1)], cwd=proj, capture_output=True)
        Path(sys.argv[1]).write_text(_sh(proj, sys.executable, "-m", *show_command()))
