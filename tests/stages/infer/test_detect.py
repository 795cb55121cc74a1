"""Detect stage end to end on CPU: a tiny extracted + trained run, then `losa-detect` on videos.

The run is built once per module: two synthetic clips extracted with the tiny preset at 32 px from
a saved backbone checkpoint, a 2-class CSV annotation and two training epochs of a small model.
"""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import pytest
import torch
from click.testing import CliRunner

from losa.encoder.checkpoint import to_official_state_dict
from losa.encoder.sampling import ClipSampling
from stages.infer.detect import (
    CheckpointMismatchError,
    RunError,
    detect,
    extract_config_from_provenance,
    load_run_info,
    resolve_checkpoint,
)
from stages.extract.run import run_extract
from stages.extract.config import ExtractConfig, sha256_file
from stages.train.run import train
from stages.demo.videogen import moving_square_frames, write_mp4
from storage import open_store

pytestmark = pytest.mark.filterwarnings("ignore::UserWarning")

CLASSES = ["jump", "run"]
HEAD = {"embd_dim": 32, "fpn_dim": 32, "head_dim": 32, "n_heads": 2, "window": 5,
        "n_levels": 3, "regression_ranges": [[0, 4], [4, 8], [8, 10000]], "path_drop": 0.0}


def _cfg(checkpoint: Path | None = None, seed: int = 3) -> ExtractConfig:
    return ExtractConfig(preset="tiny", checkpoint=checkpoint, seed=seed, layers=[2],
                         sampling=ClipSampling(frames_per_clip=4, frame_step=1, clip_stride=2),
                         resolution=32, batch_clips=8, chunk_steps=16, device="cpu")


def _video(path: Path, seconds: float, seed: int) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    write_mp4(path, moving_square_frames(int(seconds * 15), size=48, seed=seed), fps=15)
    return path


def _make_run(root: Path, checkpoint: Path) -> Path:
    videos = root / "train_videos"
    _video(videos / "alpha.mp4", 2.0, 1)
    _video(videos / "beta.mp4", 2.4, 2)
    store = root / "train.zarr"
    summary = run_extract(_cfg(checkpoint), videos, store, progress=False)
    assert summary.done == 2 and summary.failed == 0
    ann = root / "ann.csv"
    ann.write_text("video,start,end,label,subset\n"
                   "alpha,0.3,1.1,jump,training\nalpha,1.2,1.8,run,training\n"
                   "beta,0.2,0.9,run,training\nbeta,1.0,2.2,jump,training\n")
    run_dir = root / "run_ckpt"
    train(store, ann, run_dir, model_cfg={"adapter_dim": 16, "adapter_heads": 2, "head": HEAD},
          train_cfg={"epochs": 2, "batch_size": 2, "warmup_epochs": 1, "max_seq_len": 64,
                     "crop_ratio": None, "device": "cpu", "ema_decay": 0.9},
          progress=False)
    return run_dir


def _as_random_run(run_dir: Path, dst: Path, seed: int) -> Path:
    """A copy of a run whose run.json says its features came from random weights of ``seed``."""
    shutil.copytree(run_dir, dst)
    info = json.loads((dst / "run.json").read_text())
    info["store_provenance"]["checkpoint"] = {"sha256": "random", "seed": seed}
    (dst / "run.json").write_text(json.dumps(info))
    return dst


@pytest.fixture(scope="module")
def runs(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Path]:
    """A run extracted with a checkpoint file (random tiny weights of seed 5, saved in the official
    layout) and a hand-made twin recorded as extracted with random weights of seed 5 (so both
    produce the same features)."""
    from losa.encoder.backbone import build_backbone

    torch.manual_seed(0)
    root = tmp_path_factory.mktemp("detect")
    ckpt = root / "tiny_backbone.pth"
    torch.save({"model": to_official_state_dict(build_backbone("tiny", 4, 32, seed=5))}, ckpt)
    run = _make_run(root, ckpt)
    return {"ckpt": run, "random": _as_random_run(run, root / "run_random", 5), "checkpoint": ckpt,
            "root": root}


def _check_results(payload: dict, expected: dict[str, float]) -> None:
    assert payload["version"] == "losa-detect-1"
    assert set(payload["results"]) == set(expected)
    assert payload["external_data"]["used"] is True
    for vid, duration in expected.items():
        meta = payload["external_data"]["videos"][vid]
        assert meta["duration"] == pytest.approx(duration, abs=0.07)
        dets = payload["results"][vid]
        assert dets, f"no detections for {vid}"
        scores = [d["score"] for d in dets]
        assert scores == sorted(scores, reverse=True)
        for d in dets:
            s, e = d["segment"]
            assert 0.0 <= s < e <= meta["duration"] + 1e-9
            assert d["label"] in CLASSES
            assert 0.0 <= d["score"] <= 1.0


def test_cli_detect_end_to_end(runs: dict[str, Path], tmp_path: Path) -> None:
    from pipeline.cli_detect import main

    v1 = _video(tmp_path / "in" / "first.mp4", 1.8, 7)
    v2 = _video(tmp_path / "in" / "second.mp4", 2.6, 8)
    out, plots = tmp_path / "det.json", tmp_path / "plots"
    ann = tmp_path / "gt.csv"
    ann.write_text("video,start,end,label\nfirst,0.2,1.0,jump\nsecond,0.5,2.0,run\n")
    result = CliRunner().invoke(main, [str(v1), str(v2), "--run", str(runs["random"]), "--out", str(out),
                                       "--plot", str(plots), "--annotations", str(ann), "--min-score", "0",
                                       "--top-k", "3", "--device", "cpu", "--no-progress"])
    assert result.exit_code == 0, result.output
    assert "random" in result.output  # the random-backbone warning reaches the user
    assert "first" in result.output and "second" in result.output and "label" in result.output
    payload = json.loads(out.read_text())
    _check_results(payload, {"first": 1.8, "second": 2.6})
    assert payload["external_data"]["store_provenance"] == load_run_info(runs["random"])["store_provenance"]
    for vid in ("first", "second"):
        png = plots / f"{vid}.png"
        assert png.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    # the cache store holds both videos under content-keyed ids, re-used on the next call
    cache = open_store(runs["random"] / "detect_cache.zarr")
    ids = cache.videos()
    assert sorted(i.split("@")[0] for i in ids) == ["first", "second"]
    again = detect([v2], runs["random"], device="cpu")  # batch of one: same up to float noise
    a, b = again["results"]["second"], payload["results"]["second"]
    assert [d["label"] for d in a] == [d["label"] for d in b]
    assert [d["score"] for d in a] == pytest.approx([d["score"] for d in b], abs=1e-4)
    assert [d["segment"] for d in a] == [pytest.approx(d["segment"], abs=2e-3) for d in b]
    assert open_store(runs["random"] / "detect_cache.zarr").videos() == ids


def test_detect_features_match_the_training_extraction(runs: dict[str, Path], tmp_path: Path) -> None:
    """Detecting a training video stores exactly the training store's features, whether the
    weights come from the checkpoint file or are rebuilt from the recorded seed."""
    src = runs["root"] / "train_videos" / "alpha.mp4"
    train_store = open_store(load_run_info(runs["ckpt"])["store"])
    for run, ckpt in ((runs["ckpt"], runs["checkpoint"]), (runs["random"], None)):
        cache = tmp_path / f"{run.name}.zarr"
        payload = detect([src], run, cache_store=cache, device="cpu", checkpoint=ckpt)
        _check_results(payload, {"alpha": 2.0})
        cid = payload["external_data"]["videos"]["alpha"]["cache_id"]
        cached = open_store(cache).read(cid)
        for layer, arr in train_store.read("alpha").items():
            assert torch.equal(torch.from_numpy(cached[layer]), torch.from_numpy(arr)), (run.name, layer)


def test_checkpoint_missing_or_different(runs: dict[str, Path], tmp_path: Path) -> None:
    video = _video(tmp_path / "v.mp4", 1.5, 9)
    # training recorded where the store's checkpoint was read from
    assert load_run_info(runs["ckpt"])["checkpoint"] == str(runs["checkpoint"].resolve())
    no_path = tmp_path / "run_without_path"
    shutil.copytree(runs["ckpt"], no_path)
    info = json.loads((no_path / "run.json").read_text())
    info["checkpoint"] = None  # e.g. a run trained on a store written before paths were recorded
    (no_path / "run.json").write_text(json.dumps(info))
    with pytest.raises(RunError, match="--checkpoint"):
        detect([video], no_path, device="cpu", cache_store=tmp_path / "c.zarr")
    moved = tmp_path / "moved"
    moved.mkdir()
    shutil.move(str(runs["checkpoint"]), moved / "w.pth")  # recorded path no longer exists
    try:
        with pytest.raises(FileNotFoundError, match="checkpoint not found"):
            detect([video], runs["ckpt"], device="cpu", cache_store=tmp_path / "c2.zarr")
    finally:
        shutil.move(str(moved / "w.pth"), runs["checkpoint"])
    with pytest.raises(FileNotFoundError, match="nope.pth"):
        detect([video], runs["ckpt"], device="cpu", checkpoint=tmp_path / "nope.pth")
    other = tmp_path / "other.pth"
    shutil.copy(runs["checkpoint"], other)
    with open(other, "ab") as fh:
        fh.write(b"\0")
    with pytest.raises(CheckpointMismatchError, match="other.pth"):
        detect([video], runs["ckpt"], device="cpu", checkpoint=other)
    assert not (runs["ckpt"] / "detect_cache.zarr").exists()  # nothing extracted on an error
    # a run made on random weights refuses a checkpoint
    with pytest.raises(CheckpointMismatchError, match="random"):
        detect([video], runs["random"], device="cpu", checkpoint=runs["checkpoint"])


def test_recorded_checkpoint_path_and_sha(runs: dict[str, Path], tmp_path: Path) -> None:
    info = load_run_info(runs["ckpt"])
    prov = info["store_provenance"]
    assert prov["checkpoint"]["sha256"] == sha256_file(runs["checkpoint"])
    recorded = {**info, "checkpoint": str(runs["checkpoint"])}
    assert resolve_checkpoint(prov, recorded) == runs["checkpoint"]
    cfg = extract_config_from_provenance(prov, runs["checkpoint"], device="cpu")
    assert cfg.all_layers == [2, 4] and cfg.resolution == 32 and cfg.sampling.clip_stride == 2
    with pytest.raises(RunError, match="feature"):  # made by another feature definition
        extract_config_from_provenance({**prov, "feature": "something else"}, runs["checkpoint"])
    with pytest.raises(RunError, match="resolution"):
        extract_config_from_provenance({k: v for k, v in prov.items() if k != "resolution"}, None)


def test_undecodable_video_is_named(runs: dict[str, Path], tmp_path: Path) -> None:
    from pipeline.cli_detect import main

    bad = tmp_path / "broken.mp4"
    bad.write_bytes(b"this is not a video" * 50)
    result = CliRunner().invoke(main, [str(bad), "--run", str(runs["random"]), "--device", "cpu",
                                       "--cache", str(tmp_path / "c.zarr")])
    assert result.exit_code == 1
    assert "broken.mp4" in result.output and "Traceback" not in result.output


def test_not_a_run(tmp_path: Path) -> None:
    (tmp_path / "empty").mkdir()
    with pytest.raises(RunError, match="run.json"):
        detect([tmp_path / "x.mp4"], tmp_path / "empty")
    with pytest.raises(FileNotFoundError, match="missing_run"):
        detect([tmp_path / "x.mp4"], tmp_path / "missing_run")


def test_prefilled_cache_is_read_not_rewritten(runs: dict[str, Path], tmp_path: Path, monkeypatch) -> None:
    """`losa-detect --recipe-store STORE --cache C` fills the cache with the training store's recipe
    before any run exists (a pipeline stage of its own); detecting with a run trained on that store
    then runs no backbone and leaves every file of the cache as it was."""
    from pipeline.cli_detect import main
    import stages.extract.run as extract_run

    src = runs["root"] / "train_videos" / "alpha.mp4"
    store = load_run_info(runs["ckpt"])["store"]
    cache = tmp_path / "cache.zarr"
    res = CliRunner().invoke(main, [str(src), "--recipe-store", store, "--cache", str(cache), "--checkpoint",
                                    str(runs["checkpoint"]), "--device", "cpu", "--no-progress"])
    assert res.exit_code == 0, res.output
    assert "alpha@" in res.output
    cid = open_store(cache).videos()[0]
    for layer, arr in open_store(store).read("alpha").items():   # the training store's features
        assert torch.equal(torch.from_numpy(open_store(cache).read(cid)[layer]), torch.from_numpy(arr))

    def files():
        return {p.relative_to(cache): p.read_bytes() for p in sorted(cache.rglob("*")) if p.is_file()}

    before = files()
    monkeypatch.setattr(extract_run, "extract_items", lambda *a, **k: pytest.fail("extracted again"))
    payload = detect([src], runs["ckpt"], cache_store=cache, device="cpu", checkpoint=runs["checkpoint"])
    _check_results(payload, {"alpha": 2.0})
    assert files() == before
    for bad in (["--cache", str(cache), "--run", str(runs["ckpt"])], ["--cache", str(cache), "--plot", "x.png"], []):
        res = CliRunner().invoke(main, [str(src), "--recipe-store", store, *bad])
        assert res.exit_code != 0 and "--recipe-store" in res.output
