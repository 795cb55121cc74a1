"""Held-out part of the training videos (stages/data/holdout.py): the split, the probes fitted on the
rest and scored on it, training that leaves it out and `losa-eval --run --holdout` scoring on it."""

from __future__ import annotations

import json

import pytest
import yaml
from click.testing import CliRunner

from stages.data.annotations import load_annotations
from stages.data.holdout import split_holdout
from stages.demo.synthetic_store import make_synthetic_store
from stages.errors import StageError
from stages.tools import probe as probe_mod
from storage import open_store

TINY_HEAD = {"embd_dim": 16, "fpn_dim": 16, "head_dim": 16, "n_levels": 2, "window": 5,
             "regression_ranges": [[0, 8], [8, 10000]]}


def test_split_is_seeded_disjoint_and_complete() -> None:
    ids = [f"v{i:02d}" for i in range(20)]
    fit, held = split_holdout(reversed(ids), 0.25, seed=3)
    assert len(held) == 5 and sorted(fit + held) == ids and not set(fit) & set(held)
    assert (fit, held) == split_holdout(ids, 0.25, seed=3)            # order of input irrelevant
    assert held != split_holdout(ids, 0.25, seed=4)[1]
    assert split_holdout(ids, 0.0) == (ids, [])
    assert len(split_holdout(ids[:3], 0.01)[1]) == 1                  # at least one held out
    with pytest.raises(StageError, match="holdout must be in"):
        split_holdout(ids, 1.0)
    with pytest.raises(StageError, match="at least 2 training videos"):
        split_holdout(ids[:1], 0.5)


def test_probe_fits_on_the_rest_and_scores_on_the_held_out_part(tmp_path, monkeypatch) -> None:
    data = make_synthetic_store(tmp_path / "f.zarr", num_videos=8, num_steps=40, channels=8,
                                layers=(2, 4), seed=0, val_videos=2)
    ann = load_annotations(data.annotations)
    fit, held = split_holdout(ann.videos_in("training"), 0.34, seed=1)
    seen: list[list[str]] = []
    real = probe_mod._collect
    monkeypatch.setattr(probe_mod, "_collect", lambda r, videos, *a, **k: seen.append(list(videos))
                        or real(r, videos, *a, **k))
    res = probe_mod.run_probe(open_store(data.store), ann, "training", "validation", layers=[4],
                              holdout=0.34, holdout_seed=1)
    assert seen == [fit, held] and len(res) == 1                   # validation is not read
    seen.clear()
    probe_mod.run_probe(open_store(data.store), ann, "training", "validation", layers=[4])
    assert seen == [ann.videos_in("training"), ann.videos_in("validation")]


def test_train_leaves_the_held_out_videos_out_and_eval_scores_on_them(tmp_path, monkeypatch) -> None:
    import stages.train.run as train_run
    from pipeline.cli_eval import main as eval_main
    from pipeline.cli_train import main as train_main

    trained_on: list[list[str]] = []
    real_ds = train_run.StoreDataset

    def spy(reader, ann, subset, *a, **k):
        trained_on.append(ann.videos_in(subset))
        return real_ds(reader, ann, subset, *a, **k)

    monkeypatch.setattr(train_run, "StoreDataset", spy)

    data = make_synthetic_store(tmp_path / "f.zarr", num_videos=6, num_steps=(40, 60), channels=16,
                                layers=(4, 8), seed=1, val_videos=1)
    params = tmp_path / "params.yaml"
    params.write_text(yaml.safe_dump({"train": {"epochs": 1, "batch_size": 2, "seed": 1, "holdout": 0.4,
                                                "holdout_seed": 2,
                                                "model": {"mode": "head-only", "head": TINY_HEAD}}}))
    run = tmp_path / "run"
    res = CliRunner().invoke(train_main, ["--store", str(data.store), "--annotations", str(data.annotations),
                                          "--out", str(run), "--params", str(params), "--max-seq-len", "64",
                                          "--no-progress", "--device", "cpu"])
    assert res.exit_code == 0, res.output
    info = json.loads((run / "run.json").read_text())
    ann = load_annotations(data.annotations)
    _, held = split_holdout(ann.videos_in("training"), 0.4, seed=2)
    assert info["holdout_videos"] == held and len(held) == 2
    assert info["model_cfg"]["long_context"] == 64          # long-range context = training window
    assert trained_on[0] == sorted(set(ann.videos_in("training")) - set(held))
    out = tmp_path / "dets.json"
    res = CliRunner().invoke(eval_main, ["--run", str(run), "--holdout", "--device", "cpu",
                                         "--predictions-out", str(out), "--tious", "0.5"])
    assert res.exit_code == 0, res.output
    assert sorted(json.loads(out.read_text())["results"]) == held
    # a run without a held-out part cannot be scored on one
    params.write_text(yaml.safe_dump({"train": {"epochs": 1, "batch_size": 2,
                                                "model": {"mode": "head-only", "head": TINY_HEAD}}}))
    run2 = tmp_path / "run2"
    res = CliRunner().invoke(train_main, ["--store", str(data.store), "--annotations", str(data.annotations),
                                          "--out", str(run2), "--params", str(params), "--max-seq-len", "64",
                                          "--no-progress", "--device", "cpu"])
    assert res.exit_code == 0, res.output
    res = CliRunner().invoke(eval_main, ["--run", str(run2), "--holdout", "--device", "cpu"])
    assert res.exit_code == 1 and "held no training videos out" in res.output
