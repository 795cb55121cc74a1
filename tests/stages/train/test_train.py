"""Training-stage tests on small synthetic stores: exact resume, NaN stop, real learning, run files."""
from __future__ import annotations

import csv
import json

import numpy as np
import pytest
import torch

import stages.train.run as train_mod
from stages.data.annotations import load_annotations
from stages.evaluate.run import evaluate_files
from stages.demo.synthetic_store import make_synthetic_store
from stages.infer.predict import load_run, model_config_from_store, predict_store
from stages.train.run import NonFiniteLossError, RunDirError, WarmupCosine, train
from stages.train.config import TrainConfig, TrainConfigError
from storage import open_store



pytestmark = pytest.mark.usefixtures("one_torch_thread")

TINY_HEAD = dict(embd_dim=32, fpn_dim=32, head_dim=32, n_heads=2, window=9, n_embd_layers=1,
                 n_head_layers=2, path_drop=0.0)
TINY_MODEL = dict(mode="losa", head=TINY_HEAD, adapter_dim=16, adapter_heads=2)


@pytest.fixture(scope="module")
def small_store(tmp_path_factory):
    root = tmp_path_factory.mktemp("small")
    return make_synthetic_store(root / "f.zarr", num_videos=6, num_steps=(40, 80), channels=16,
                                layers=(4, 8), num_classes=2, seed=1, val_videos=1)


def _cfg(**kw) -> dict:
    return _cfg_base(**kw)


def _cfg_base(**kw) -> dict:
    base = dict(epochs=2, batch_size=2, lr=1e-3, warmup_epochs=1, max_seq_len=48, seed=7, ema_decay=0.9)
    base.update(kw)
    return base


def test_train_config_round_trip_and_errors():
    cfg = TrainConfig(epochs=3, crop_ratio=[0.8, 1.0], nms={"sigma": 0.7})
    again = TrainConfig.from_dict(json.loads(json.dumps(cfg.to_dict())))
    assert again == cfg and again.nms.sigma == 0.7 and again.crop_ratio == (0.8, 1.0)
    with pytest.raises(TrainConfigError, match="bogus"):
        TrainConfig.from_dict({"bogus": 1})
    with pytest.raises(TrainConfigError, match="amp"):
        TrainConfig(amp="fp8")


def test_warmup_cosine_schedule():
    f = WarmupCosine(warmup=4, total=12)
    assert [f(i) for i in range(4)] == [0.25, 0.5, 0.75, 1.0]
    assert f(4) == pytest.approx(1.0) and f(8) == pytest.approx(0.5) and f(12) == pytest.approx(0.0)
    assert all(f(i) >= f(i + 1) for i in range(4, 12))


def test_model_config_from_store(small_store):
    reader = open_store(small_store.store)
    cfg = model_config_from_store(reader, {"head": TINY_HEAD}, 2)
    assert (cfg.tapped_layers, cfg.last_layer, cfg.channels, cfg.cells) == ((4,), 8, 16, 1)
    assert cfg.required_layers == (4, 8) and cfg.head.embd_dim == 32
    assert model_config_from_store(reader, {"mode": "head-only"}, 2).required_layers == (8,)
    with pytest.raises(ValueError, match=r"\[12\]"):
        model_config_from_store(reader, {"layers": [12]}, 2)
    with pytest.raises(ValueError, match="channels"):
        model_config_from_store(reader, {"channels": 8}, 2)


def test_resume_is_exact(small_store, tmp_path, monkeypatch):
    _cfg = lambda: _cfg_base(checkpoint_every=1)  # noqa: E731 - a checkpoint after epoch 1 to resume from
    straight = train(small_store.store, small_store.annotations, tmp_path / "a", TINY_MODEL, _cfg(),
                     progress=False)

    class Killed(Exception):
        pass

    def die(*_args, **_kw):
        raise Killed  # the process dies right after the epoch-1 checkpoint was written

    with monkeypatch.context() as m:
        m.setattr(train_mod, "write_metrics_csv", die)
        with pytest.raises(Killed):
            train(small_store.store, small_store.annotations, tmp_path / "b", TINY_MODEL, _cfg(), progress=False)
    assert torch.load(tmp_path / "b" / "checkpoint.pt", weights_only=True)["epoch"] == 1
    with pytest.raises(RunDirError, match="already holds"):
        train(small_store.store, small_store.annotations, tmp_path / "b", TINY_MODEL, _cfg(), progress=False)
    with pytest.raises(RunDirError, match="adapter_dim"):
        train(small_store.store, small_store.annotations, tmp_path / "b", {**TINY_MODEL, "adapter_dim": 8},
              _cfg(), resume=True, progress=False)
    resumed = train(small_store.store, small_store.annotations, tmp_path / "b", TINY_MODEL, _cfg(),
                    resume=True, progress=False)
    for a, b in ((straight.model, resumed.model), (straight.ema, resumed.ema)):
        sa, sb = a.state_dict(), b.state_dict()
        assert sa.keys() == sb.keys()
        for k in sa:
            assert torch.equal(sa[k], sb[k]), k
    assert [r["loss"] for r in straight.summary["history"]] == [r["loss"] for r in resumed.summary["history"]]
    # the model did change during training (the comparison above is not trivially true)
    init = torch.load(tmp_path / "b" / "checkpoint.pt", weights_only=True)
    assert init["epoch"] == 2 and init["iteration"] == straight.summary["iterations"]
    with open(tmp_path / "b" / "metrics.csv") as fh:
        assert [int(r["epoch"]) for r in csv.DictReader(fh)] == [1, 2]
    # the DVCLive curves of the resumed run hold each epoch once, with the uninterrupted run's values
    for run in ("a", "b"):
        with open(tmp_path / run / "dvclive" / "plots" / "metrics" / "loss.tsv") as fh:
            rows = list(csv.DictReader(fh, delimiter="\t"))
        assert [int(r["step"]) for r in rows] == [1, 2]
        assert [float(r["loss"]) for r in rows] == pytest.approx([r["loss"] for r in straight.summary["history"]])


class PoisonedReader:
    """Delegates to a real reader; every read after the first ``clean_reads`` returns NaNs."""

    def __init__(self, reader, clean_reads: int) -> None:
        self._r, self.left = reader, clean_reads

    def __getattr__(self, name):
        return getattr(self._r, name)

    def read(self, *args, **kwargs):
        out = self._r.read(*args, **kwargs)
        self.left -= 1
        if self.left < 0:
            out = {k: np.full_like(v, np.nan) for k, v in out.items()}
        return out


def test_nan_loss_stops_and_keeps_last_good_checkpoint(small_store, tmp_path):
    reader = PoisonedReader(open_store(small_store.store), clean_reads=5)  # epoch 1 reads 5 videos
    run = tmp_path / "nan"
    with pytest.raises(NonFiniteLossError, match=r"epoch 2 iteration 1\b"):
        # read from the store every epoch (no RAM cache) and checkpoint every epoch
        train(reader, small_store.annotations, run, TINY_MODEL,
              _cfg(epochs=3, checkpoint_every=1, cache_features=False), progress=False)
    ckpt = torch.load(run / "checkpoint.pt", weights_only=True)
    assert ckpt["epoch"] == 1
    assert all(torch.isfinite(v).all() for v in ckpt["model"].values() if v.is_floating_point())
    assert not (run / "model.pt").exists()


def test_training_learns_synthetic_actions(tmp_path):
    data = make_synthetic_store(tmp_path / "f.zarr", num_videos=20, num_steps=(96, 128), channels=32,
                                layers=(4, 8), num_classes=3, seed=0, val_videos=4, signal=1.5)
    ann = load_annotations(data.annotations)
    reader = open_store(data.store)
    val_ids = ann.videos_in("validation")
    cfg = _cfg(epochs=8, batch_size=4, max_seq_len=128, ema_decay=0.95, seed=0)
    result = train(data.store, data.annotations, tmp_path / "run", TINY_MODEL, cfg, val_subset="validation",
                   progress=False)
    run = tmp_path / "run"
    for name in ("run.json", "model.pt", "checkpoint.pt", "metrics.csv", "dvclive/metrics.json"):
        assert (run / name).is_file(), name
    info = json.loads((run / "run.json").read_text())
    assert info["classes"] == data.classes and info["model_cfg"]["tapped_layers"] == [4]
    with open(run / "dvclive" / "plots" / "metrics" / "loss.tsv") as fh:
        rows = [{k: float(v) for k, v in r.items()} for r in csv.DictReader(fh, delimiter="\t")]
    assert [r["step"] for r in rows] == list(range(1, 9)) and rows[-1]["loss"] < rows[0]["loss"]
    live = json.loads((run / "dvclive" / "metrics.json").read_text())  # the last epoch, validation included
    assert live["step"] == 8 and live["val_mAP"] == pytest.approx(result.summary["final"]["val_mAP"])

    preds = predict_store(run, reader, val_ids, batch_size=3)  # from the run directory (EMA weights)
    assert set(preds["results"]) == set(val_ids)
    for vid in val_ids:
        duration = reader.video_info(vid)["duration"]
        for det in preds["results"][vid]:
            assert 0.0 <= det["segment"][0] < det["segment"][1] <= duration
            assert det["label"] in data.classes
    trained = evaluate_files(preds, ann, "validation", (0.3, 0.5, 0.7))["average_mAP"]
    assert result.summary["final"]["val_mAP"] == pytest.approx(
        evaluate_files(preds, ann, "validation", (0.3, 0.4, 0.5, 0.6, 0.7))["average_mAP"], abs=1e-6)

    untrained_model = train_mod.TALModel(result.model.cfg)
    untrained = evaluate_files(predict_store(untrained_model, reader, val_ids, classes=data.classes), ann,
                               "validation", (0.3, 0.5, 0.7))["average_mAP"]
    # measured over data seeds 0-4: trained 0.26-0.57 (seed 0: 0.26), untrained <= 0.09
    assert trained > 0.15 and trained > untrained + 0.1, (trained, untrained)

    model, loaded_info = load_run(run)
    assert loaded_info["classes"] == data.classes
    for k, v in model.state_dict().items():
        assert torch.equal(v, result.ema.state_dict()[k]), k


def test_cli_train_with_params_file(small_store, tmp_path):
    import yaml
    from click.testing import CliRunner

    from pipeline.cli_train import main

    params = tmp_path / "params.yaml"
    params.write_text(yaml.safe_dump({"train": {
        "epochs": 1, "batch_size": 2, "max_seq_len": 48, "seed": 1,
        "model": {"mode": "head-only", "head": TINY_HEAD}, "nms": {"sigma": 0.6}}}))
    run = tmp_path / "run"
    args = ["--store", str(small_store.store), "--annotations", str(small_store.annotations), "--out", str(run),
            "--params", str(params), "--val-subset", "validation", "--no-progress", "--device", "cpu"]
    res = CliRunner().invoke(main, args)
    assert res.exit_code == 0, res.output
    assert "average mAP" in res.output and "model.pt" in res.output
    info = json.loads((run / "run.json").read_text())
    assert info["model_cfg"]["mode"] == "head-only" and info["model_cfg"]["head"]["embd_dim"] == 32
    assert info["train_cfg"]["epochs"] == 1 and info["train_cfg"]["nms"]["sigma"] == 0.6
    again = CliRunner().invoke(main, args)  # an existing run without --resume: one clear line
    assert again.exit_code == 1 and "already holds a training run" in again.output
    bad = CliRunner().invoke(main, [*args[:4], "--out", str(tmp_path / "r2"), "--layers", "4,99"])
    assert bad.exit_code == 1 and "[99]" in bad.output and "Traceback" not in bad.output


def test_bench_train_tiny(tmp_path):
    from stages.tools.bench_train import bench_train, write_report

    res = bench_train(preset="tiny", num_steps=64, iters=1, warmup=0, modes=("head-only", "losa"),
                      backbone="tiny", onfly_clips=2, resolution=32, device="cpu",
                      model_overrides={"head": TINY_HEAD, "adapter_dim": 16, "adapter_heads": 2},
                      workdir=tmp_path, isolate=False)
    assert [r["mode"] for r in res["modes"]] == ["head-only", "losa"]
    head_only, losa = res["modes"]
    assert losa["params"] > head_only["params"]
    assert all(r["compute_s"] > 0 and r["read_s"] > 0 for r in res["modes"])
    o = res["onfly"]
    assert o["extrapolated_clips"] == 64 and o["backbone_s"] == pytest.approx(64 * o["seconds_per_clip"])
    assert o["ratio"] == pytest.approx(o["onfly_step_s"] / o["store_step_s"])
    assert "| losa |" in res["markdown"] and "extrapolated linearly to 64 clips" in res["markdown"]
    write_report(res, tmp_path / "bench.json")
    assert json.loads((tmp_path / "bench.json").read_text())["modes"][1]["mode"] == "losa"
    assert not list(tmp_path.glob("*.zarr"))  # the synthetic stores were temporary
