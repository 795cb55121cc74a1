"""Hostile or mistaken inputs that must stay harmless: pickled code in torch files (weights_only),
YAML tags (safe_load), npy export over a user's folder, colliding plot names, a detect cache of
another recipe.  See docs/reliability.md."""

from __future__ import annotations

import json
import os
from pathlib import Path

import numpy as np
import pytest
import torch
from click.testing import CliRunner

from pipeline.cli_detect import plot_paths
from pipeline.cli_eval import main as eval_main
from pipeline.cli_store import main as store_main
from pipeline.cli_train import main as train_main
from stages.demo.synthetic_store import make_synthetic_store

pytestmark = pytest.mark.timeout(120)


class _Evil:
    """Unpickling this runs code (creates the marker file) — unless the loader refuses objects."""

    def __init__(self, marker: Path) -> None:
        self.marker = str(marker)

    def __reduce__(self):
        return (os.mkdir, (self.marker,))


@pytest.fixture(scope="module")
def syn(tmp_path_factory):
    root = tmp_path_factory.mktemp("inputs")
    return make_synthetic_store(root / "s.zarr", num_videos=3, num_steps=24, channels=8, layers=(2, 4),
                                num_classes=2, seed=0, val_videos=1)


def fake_run(root: Path, syn) -> Path:
    run = root / "run"
    run.mkdir()
    info = {"store": str(syn.store), "store_provenance": syn.provenance, "annotations": str(syn.annotations),
            "classes": syn.classes, "model_cfg": {}, "train_cfg": {}}
    (run / "run.json").write_text(json.dumps(info))
    return run


def test_pickled_code_in_model_file_is_refused_not_run(tmp_path, syn):
    run = fake_run(tmp_path, syn)
    marker = tmp_path / "pwned"
    torch.save({"format": "losa-model", "info": {}, "model": _Evil(marker)}, run / "model.pt")
    res = CliRunner().invoke(eval_main, ["--run", str(run), "--subset", "validation", "--device", "cpu"])
    assert res.exit_code == 1, res.output
    assert "trained model" in res.output and "Traceback" not in res.output
    assert not marker.exists()


def test_pickled_code_in_checkpoint_is_refused_not_run(tmp_path, syn):
    run = fake_run(tmp_path, syn)
    marker = tmp_path / "pwned"
    torch.save({"format": "losa-checkpoint", "model": _Evil(marker)}, run / "checkpoint.pt")
    res = CliRunner().invoke(train_main, ["--store", str(syn.store), "--annotations", str(syn.annotations),
                                          "--out", str(run), "--resume", "--device", "cpu", "--no-progress"])
    assert res.exit_code == 1 and "training checkpoint" in res.output, res.output
    assert not marker.exists()


def test_yaml_tags_are_not_executed(tmp_path, syn):
    marker = tmp_path / "pwned"
    params = tmp_path / "params.yaml"
    params.write_text(f"train:\n  epochs: !!python/object/apply:os.mkdir ['{marker}']\n")
    res = CliRunner().invoke(train_main, ["--params", str(params), "--store", str(syn.store),
                                          "--annotations", str(syn.annotations), "--out", str(tmp_path / "r")])
    assert res.exit_code == 1 and "not valid YAML" in res.output, res.output
    assert not marker.exists()


def test_npy_export_never_clobbers_a_folder(tmp_path, syn):
    mine = tmp_path / "mine"
    mine.mkdir()
    (mine / "notes.txt").write_text("my work")
    res = CliRunner().invoke(store_main, ["export", str(syn.store), "--format", "npy", "--out", str(mine)])
    assert res.exit_code == 1 and "not empty" in res.output and "--overwrite" in res.output
    assert [p.name for p in mine.iterdir()] == ["notes.txt"]
    bad = CliRunner().invoke(store_main, ["export", str(syn.store), "--format", "npy", "--layer", "3",
                                          "--out", str(tmp_path / "new")])
    assert bad.exit_code == 1 and "layer 3" in bad.output
    assert not (tmp_path / "new").exists() and not list(tmp_path.glob(".new*"))   # nothing left
    ok = CliRunner().invoke(store_main, ["export", str(syn.store), "--format", "npy", "--out", str(mine),
                                         "--overwrite"])
    assert ok.exit_code == 0, ok.output
    assert sorted(p.name for p in mine.iterdir()) == sorted([f"{v}.npy" for v in syn.videos] + ["index.json"])
    again = CliRunner().invoke(store_main, ["export", str(syn.store), "--format", "hdf5",
                                            "--out", str(tmp_path / "x.h5")])
    assert again.exit_code == 0
    twice = CliRunner().invoke(store_main, ["export", str(syn.store), "--format", "hdf5",
                                            "--out", str(tmp_path / "x.h5")])
    assert twice.exit_code == 1 and "--overwrite" in twice.output and "overwrite=True" not in twice.output


def test_plot_names_are_injective(tmp_path):
    ids = ["a/b", "a__b", "a b", "a~20b", "-x"]
    paths = plot_paths(tmp_path / "plots", ids)
    assert len(set(paths.values())) == len(ids)
    assert all(p.parent == tmp_path / "plots" and not p.name.startswith("-") for p in paths.values())


def test_detect_cache_of_another_recipe_names_the_keys(tmp_path, syn):
    from stages.extract.config import ExtractConfig
    from stages.infer.detect import _extract
    from stages.rundir import RunError

    cfg = ExtractConfig(preset="tiny", layers=[2], resolution=32, device="cpu")
    with pytest.raises(RunError, match="backbone: store has"):
        _extract(cfg, None, [], syn.store, progress=False)


def test_videos_absent_from_store_stay_one_line(tmp_path, syn):
    ann = json.loads(syn.annotations.read_text())
    ann["database"]["ghost"] = {"subset": "validation", "annotations": []}
    path = tmp_path / "a.json"
    path.write_text(json.dumps(ann))
    preds = tmp_path / "p.json"
    preds.write_text(json.dumps({"results": {"ghost": [{"label": syn.classes[0], "score": np.float64(0.5).item(),
                                                        "segment": [0.0, 1.0]}]}}))
    res = CliRunner().invoke(eval_main, ["--predictions", str(preds), "--annotations", str(path),
                                         "--subset", "validation"])
    assert res.exit_code == 0 and "Traceback" not in res.output
