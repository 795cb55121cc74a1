"""Fault injection where a run meets a store or its own files: another recipe's features,
truncated / garbage checkpoint.pt and model.pt, and the error glue (project error bases are one
line; genuine bugs keep their traceback).  See docs/reliability.md."""

from __future__ import annotations

import json
import shutil

import click
import pytest
import torch
import yaml
from click.testing import CliRunner

from pipeline.cli_eval import main as eval_main
from pipeline.cli_train import main as train_main
from pipeline.errors import EXIT_NOT_WRITABLE, handle_user_errors
from stages.demo.synthetic_store import make_synthetic_store

pytestmark = [pytest.mark.usefixtures("one_torch_thread"), pytest.mark.timeout(120)]

TINY_HEAD = dict(embd_dim=16, fpn_dim=16, head_dim=16, n_heads=2, window=5, n_embd_layers=1,
                 n_head_layers=1, path_drop=0.0)


@pytest.fixture(scope="module")
def world(tmp_path_factory):
    """Store A, store B (same shapes, other weights seed → other provenance), a 1-epoch run on A."""
    root = tmp_path_factory.mktemp("faults")
    a = make_synthetic_store(root / "a.zarr", num_videos=4, num_steps=40, channels=8, layers=(2, 4),
                             num_classes=2, seed=1, val_videos=1)
    b = make_synthetic_store(root / "b.zarr", num_videos=4, num_steps=40, channels=8, layers=(2, 4),
                             num_classes=2, seed=2, val_videos=1, annotations_path=root / "b.json")
    params = root / "params.yaml"
    params.write_text(yaml.safe_dump({"train": {
        "epochs": 1, "batch_size": 2, "max_seq_len": 32, "seed": 1, "warmup_epochs": 0,
        "model": {"mode": "head-only", "head": TINY_HEAD, "adapter_dim": 4, "adapter_heads": 2}}}))
    run = root / "run"
    res = CliRunner().invoke(train_main, train_args(a.store, a.annotations, run, params))
    assert res.exit_code == 0, res.output
    return {"a": a, "b": b, "params": params, "run": run, "root": root}


def train_args(store, annotations, run, params, *extra):
    return ["--store", str(store), "--annotations", str(annotations), "--out", str(run),
            "--params", str(params), "--no-progress", "--device", "cpu", *extra]


def one_error_line(res) -> str:
    lines = [ln for ln in res.output.splitlines() if ln.strip()]
    assert res.exception is None or isinstance(res.exception, SystemExit), res.exception
    assert "Traceback" not in res.output
    errors = [ln for ln in lines if ln.startswith("Error:")]
    assert len(errors) == 1, res.output
    return errors[0]


def copy_run(world, name):
    dst = world["root"] / name
    shutil.copytree(world["run"], dst)
    return dst


# ------------------------------------------------------------ 2. provenance wherever run meets store
def test_resume_on_store_of_another_recipe_is_refused(world):
    run = copy_run(world, "resume_b")
    res = CliRunner().invoke(train_main, train_args(world["b"].store, world["b"].annotations, run,
                                                    world["params"], "--resume", "--epochs", "2"))
    assert res.exit_code == 1
    line = one_error_line(res)
    assert "another recipe" in line and "checkpoint: run has" in line and str(world["b"].store) in line
    info = json.loads((run / "run.json").read_text())           # the run still records store A
    assert info["store_provenance"] == json.loads(json.dumps(world["a"].provenance))


def test_resume_same_store_still_works(world):
    run = copy_run(world, "resume_a")
    res = CliRunner().invoke(train_main, train_args(world["a"].store, world["a"].annotations, run,
                                                    world["params"], "--resume", "--epochs", "2"))
    assert res.exit_code == 0, res.output and "2 epoch(s)" in res.output


def test_eval_run_on_store_of_another_recipe_is_refused(world):
    res = CliRunner().invoke(eval_main, ["--run", str(world["run"]), "--store", str(world["b"].store),
                                         "--annotations", str(world["b"].annotations),
                                         "--subset", "validation", "--device", "cpu"])
    assert res.exit_code == 1
    line = one_error_line(res)
    assert "checkpoint: run has" in line and "another recipe" in line
    ok = CliRunner().invoke(eval_main, ["--run", str(world["run"]), "--subset", "validation",
                                        "--device", "cpu"])
    assert ok.exit_code == 0, ok.output


# ------------------------------------------------------------- 4. damaged run files: one line
@pytest.mark.parametrize("damage", ["truncate", "garbage", "empty"])
def test_damaged_checkpoint_with_resume_is_one_line(world, damage):
    run = copy_run(world, f"ckpt_{damage}")
    ckpt = run / "checkpoint.pt"
    data = ckpt.read_bytes()
    ckpt.write_bytes({"truncate": data[: len(data) // 2], "garbage": b"\x00not torch" * 100,
                      "empty": b""}[damage])
    res = CliRunner().invoke(train_main, train_args(world["a"].store, world["a"].annotations, run,
                                                    world["params"], "--resume", "--epochs", "2"))
    assert res.exit_code == 1, res.output
    line = one_error_line(res)
    assert str(ckpt) in line and "training checkpoint" in line


def test_foreign_torch_file_as_checkpoint_is_one_line(world):
    run = copy_run(world, "ckpt_foreign")
    torch.save({"weights": torch.zeros(2)}, run / "checkpoint.pt")
    res = CliRunner().invoke(train_main, train_args(world["a"].store, world["a"].annotations, run,
                                                    world["params"], "--resume", "--epochs", "2"))
    assert res.exit_code == 1 and "checkpoint.pt" in one_error_line(res)


@pytest.mark.parametrize("damage", ["truncate", "garbage"])
def test_corrupt_model_in_eval_run_is_one_line(world, damage):
    run = copy_run(world, f"model_{damage}")
    model = run / "model.pt"
    data = model.read_bytes()
    model.write_bytes(data[: len(data) // 3] if damage == "truncate" else b"PK\x03\x04garbage")
    res = CliRunner().invoke(eval_main, ["--run", str(run), "--subset", "validation", "--device", "cpu"])
    assert res.exit_code == 1, res.output
    line = one_error_line(res)
    assert str(model) in line and "trained model" in line


# ------------------------------------------------------------------------- error glue itself
def test_error_bases_are_one_line_and_bugs_keep_traceback():
    from losa.errors import LosaError
    from stages.errors import StageError
    from storage import StoreError, StoreNotWritable

    @click.command()
    @click.option("--kind")
    @handle_user_errors
    def cmd(kind):
        raise {"losa": LosaError("bad setting x"), "stage": StageError("bad file f"),
               "store": StoreError("bad store s"), "ro": StoreNotWritable("cannot write s"),
               "perm": PermissionError(13, "Permission denied", "/p"),
               "oserr": OSError(30, "Read-only file system", "/ro/x"),
               "value": ValueError("a bug"), "key": KeyError("k")}[kind]

    runner = CliRunner()
    for kind, code in (("losa", 1), ("stage", 1), ("store", 1), ("perm", 1), ("ro", EXIT_NOT_WRITABLE),
                       ("oserr", EXIT_NOT_WRITABLE)):
        res = runner.invoke(cmd, ["--kind", kind])
        assert res.exit_code == code, (kind, res.output)
        assert len(res.output.strip().splitlines()) == 1 and res.output.startswith("Error:")
    for kind, exc in (("value", ValueError), ("key", KeyError)):   # genuine bugs are not hidden
        res = runner.invoke(cmd, ["--kind", kind])
        assert isinstance(res.exception, exc) and not isinstance(res.exception, SystemExit)


def test_bad_model_setting_is_a_project_error():
    from losa.errors import LosaError
    from losa.model import LoSAConfig

    with pytest.raises(LosaError):
        LoSAConfig.from_dict({"mode": "losa", "tapped_layers": [2], "last_layer": 4, "channels": 8,
                              "cells": 1, "num_classes": 2, "fusion": "bogus"})
