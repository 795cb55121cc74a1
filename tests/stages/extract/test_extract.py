"""Extraction stage: config validation, decoding, discovery, store contents and the CLIs (CPU, tiny)."""

from __future__ import annotations

import hashlib
import json
import os
import shutil
from dataclasses import replace
from pathlib import Path

import numpy as np
import pytest
import torch
from click.testing import CliRunner

from losa.encoder.backbone import build_backbone
from losa.encoder.checkpoint import to_official_state_dict
from losa.encoder.sampling import ClipSampling
from pipeline.cli_bench import main as bench_main
from pipeline.cli_extract import main as extract_main
from stages.extract import decode
from stages.extract.decode import VideoError, crop_box, decode_frames, iter_clip_batches, probe_video, scaled_size
from stages.extract.run import VideoItem, check_checkpoint, discover_videos, run_extract, select_shard
from stages.extract.config import ExtractConfig, ExtractConfigError, default_layers, sha256_file
from stages.demo.videogen import moving_square_frames, write_mp4
from storage import open_store

SAMPLING = ClipSampling(frames_per_clip=4, frame_step=2, clip_stride=3)


pytestmark = pytest.mark.usefixtures("one_torch_thread")


def tiny_cfg(**kw) -> ExtractConfig:
    base = dict(preset="tiny", layers=[2], resolution=32, sampling=SAMPLING, batch_clips=4,
                chunk_steps=3, device="cpu")
    base.update(kw)
    return ExtractConfig(**base)


def store_arrays(path: Path) -> dict:
    """{video_id: (times, {layer: float32 array})} of every complete video."""
    reader = open_store(path)
    return {v: (reader.times(v), reader.read(v)) for v in reader.videos()}


def assert_same_arrays(a: dict, b: dict) -> None:
    assert sorted(a) == sorted(b)
    for vid in a:
        np.testing.assert_array_equal(a[vid][0], b[vid][0])
        assert sorted(a[vid][1]) == sorted(b[vid][1])
        for layer in a[vid][1]:
            assert a[vid][1][layer].tobytes() == b[vid][1][layer].tobytes(), (vid, layer)


# ------------------------------------------------------------------------------------ config
@pytest.mark.parametrize(
    ("kw", "match"),
    [
        (dict(preset="vit-q"), "unknown backbone preset 'vit-q'"),
        (dict(resolution=40), "resolution 40 is not a multiple of the tiny patch size 16"),
        (dict(grid=3), "grid 3 is not one of"),
        (dict(grid=4), "grid 4 is finer than the 2x2 token grid"),
        (dict(layers=[5]), "layer 5 out of range 1..4 for tiny"),
        (dict(layers=[0]), "layer 0 out of range"),
        (dict(layers=[2, 2]), "layer 2 is listed twice"),
        (dict(layers=["2"]), "not an integer block index"),
        (dict(layers=[], include_last=False), "no layers to extract"),
        (dict(sampling=ClipSampling(3, 1, 1)), "not a multiple of the tiny tubelet size"),
        (dict(resize="crop"), "resize 'crop' is not one of"),
        (dict(store_dtype="float32"), "store_dtype"),
        (dict(device="gpu"), "device 'gpu'"),
    ],
)
def test_config_validation_names_the_setting(kw, match):
    with pytest.raises(ExtractConfigError, match=match):
        tiny_cfg(**kw)


def test_default_layers_match_losa_taps_for_vit_g():
    assert default_layers(40) == [8, 16, 24, 32]
    assert default_layers(4) == [1, 2, 3]
    assert tiny_cfg(layers=[2]).all_layers == [2, 4]
    assert tiny_cfg(layers=[3, 1], include_last=False).all_layers == [1, 3]


def test_provenance_records_recipe_and_weights(tmp_path):
    cfg = tiny_cfg(temporal="keep", grid=2, norm="255", resize="squash")
    prov = cfg.provenance(None, precision="fp32")
    assert prov["checkpoint"] == {"sha256": "random", "seed": 0}
    assert prov["backbone"]["preset"] == "tiny" and prov["backbone"]["embed_dim"] == 96
    assert prov["layers"] == [2, 4] and prov["last_layer"] == 4
    assert prov["tokens_layout"] == [2, 2, 2] and prov["cells"] == 8
    assert prov["sampling"] == SAMPLING.to_dict()
    assert (prov["resolution"], prov["resize"], prov["norm"], prov["temporal"]) == (32, "squash", "255", "keep")
    assert prov["feature"] == "raw block outputs (pre-norm)"
    assert prov["store_dtype"] == "float16" and prov["precision"] == "fp32"
    assert "package_version" in prov
    json.dumps(prov)
    with_ckpt = cfg.provenance("ab" * 32)
    assert with_ckpt["checkpoint"] == {"sha256": "ab" * 32}


def test_sha256_file_streams_in_chunks(tmp_path):
    data = os.urandom(10_000)
    path = tmp_path / "w.bin"
    path.write_bytes(data)
    assert sha256_file(path, chunk_bytes=1000) == hashlib.sha256(data).hexdigest()


# ------------------------------------------------------------------------------------ decoding
def test_probe_and_clear_errors(tmp_path, make_video):
    info = probe_video(make_video("v.mp4", seconds=2.0, fps=15, size=64))
    assert (info.num_frames, info.fps, info.width, info.height) == (30, 15.0, 64, 64)
    (tmp_path / "empty.mp4").write_bytes(b"")
    (tmp_path / "text.mp4").write_text("this is not a video\n" * 20)
    with pytest.raises(VideoError, match="empty file"):
        probe_video(tmp_path / "empty.mp4")
    with pytest.raises(VideoError, match="cannot open as a video"):
        probe_video(tmp_path / "text.mp4")
    with pytest.raises(VideoError, match="no such file"):
        probe_video(tmp_path / "missing.mp4")


def test_short_crop_keeps_centre_and_squash_keeps_everything(tmp_path):
    frames = np.zeros((8, 64, 128, 3), np.uint8)
    frames[:, :, :32] = (255, 0, 0)     # red left quarter
    frames[:, :, 32:96] = (0, 255, 0)   # green centre
    frames[:, :, 96:] = (0, 0, 255)     # blue right quarter
    write_mp4(tmp_path / "wide.mp4", frames, fps=10, crf=0)
    assert scaled_size(128, 64, 32, "short-crop") == (64, 32) and crop_box(64, 32, 32) == (0, 16)
    crop = decode_frames(tmp_path / "wide.mp4", np.arange(2), 32, "short-crop").astype(int)
    squash = decode_frames(tmp_path / "wide.mp4", np.arange(2), 32, "squash").astype(int)
    assert crop.shape == squash.shape == (2, 32, 32, 3)
    assert crop[..., 1].mean() > 200 and crop[..., 0].max() < 80 and crop[..., 2].max() < 80
    assert squash[:, :, :6, 0].mean() > 200 and squash[:, :, -6:, 2].mean() > 200


@pytest.mark.parametrize(("resolution", "resize"), [(32, "short-crop"), (48, "squash")])
def test_clip_batches_gather_each_frame_once(monkeypatch, tmp_path, resolution, resize):
    frames = moving_square_frames(41, size=64, seed=4)
    write_mp4(tmp_path / "v.mp4", np.concatenate([frames, frames[:, :, :32]], axis=2), fps=15)
    sampling = ClipSampling(frames_per_clip=8, frame_step=2, clip_stride=3)
    requested: list[int] = []
    original = decode._DecordSource.get

    def spy(self, indices):
        requested.extend(int(i) for i in indices)
        return original(self, indices)

    monkeypatch.setattr(decode._DecordSource, "get", spy)
    batches = list(iter_clip_batches(tmp_path / "v.mp4", sampling, resolution, resize, batch_clips=3))
    table = sampling.frame_indices(41)
    assert [s for s, _ in batches] == list(range(0, len(table), 3))
    clips = np.concatenate([b for _, b in batches])
    assert clips.shape == (len(table), 8, resolution, resolution, 3) and clips.dtype == np.uint8
    # each needed frame decoded exactly once, in increasing order (no backward seeks)
    assert requested == sorted(set(table.ravel().tolist()))
    monkeypatch.setattr(decode._DecordSource, "get", original)
    every = decode_frames(tmp_path / "v.mp4", np.arange(41), resolution, resize)
    np.testing.assert_array_equal(clips, every[table])


# ------------------------------------------------------------------------------------ discovery
def test_discover_videos_and_shards(tmp_path, make_video):
    make_video("in/a.mp4")
    make_video("in/sub/b.MKV")
    make_video("in/.hidden/c.mp4")
    (tmp_path / "in" / "notes.txt").write_text("x")
    (tmp_path / "in" / "._a.mp4").write_bytes(b"\0" * 10)  # macOS resource-fork junk
    (tmp_path / "loose.dat").write_text("explicit files are always taken")
    items = discover_videos([tmp_path / "in", tmp_path / "loose.dat"])
    assert [it.video_id for it in items] == ["a", "loose", "sub/b"]
    make_video("other/a.mp4")
    with pytest.raises(ValueError, match="share the video id 'a'"):
        discover_videos([tmp_path / "in", tmp_path / "other"])
    with pytest.raises(FileNotFoundError, match="nope"):
        discover_videos(tmp_path / "nope")
    many = [VideoItem(f"v{i}", Path(f"v{i}.mp4")) for i in range(40)]
    shards = [select_shard(many, (i, 3)) for i in range(3)]
    assert sorted(it.video_id for s in shards for it in s) == sorted(it.video_id for it in many)
    assert all(len(s) > 5 for s in shards)
    assert select_shard(list(reversed(many)), (1, 3)) == list(reversed(shards[1]))
    with pytest.raises(ValueError, match="shard 3/3"):
        select_shard(many, (3, 3))


# ------------------------------------------------------------------------------------ the store
def test_layers_shapes_and_times_in_store(video_dir, tmp_path):
    summary = run_extract(tiny_cfg(), video_dir, tmp_path / "a.zarr", progress=False)
    assert (summary.done, summary.failed, summary.skipped_existing) == (3, 0, 0)
    reader = open_store(tmp_path / "a.zarr")
    assert reader.videos() == ["clip_a", "clip_b", "clip_c"] and reader.layers() == [2, 4]
    for vid, frames in [("clip_a", 30), ("clip_b", 24), ("clip_c", 45)]:
        info = reader.video_info(vid)
        assert (info["num_frames"], info["fps"]) == (frames, 15.0)
        np.testing.assert_array_equal(reader.times(vid), SAMPLING.centre_times(frames, 15.0))
        steps = SAMPLING.num_clips(frames)
        assert reader.layer_shapes(vid) == {2: (steps, 1, 96), 4: (steps, 1, 96)}
        assert info["extra"]["device"] == "cpu" and info["extra"]["precision"] == "fp32"
        assert summary.clips >= steps
    assert summary.clips == sum(SAMPLING.num_clips(n) for n in (30, 24, 45))

    cfg = tiny_cfg(layers=[1, 3], include_last=False, temporal="keep", grid=2)
    run_extract(cfg, video_dir, tmp_path / "b.zarr", progress=False)
    reader = open_store(tmp_path / "b.zarr")
    assert reader.layers() == [1, 3]
    assert reader.layer_shapes("clip_b") == {1: (SAMPLING.num_clips(24), 8, 96), 3: (SAMPLING.num_clips(24), 8, 96)}

    run_extract(tiny_cfg(store_dtype="bfloat16"), video_dir, tmp_path / "c.zarr", progress=False)
    f16, bf16 = (open_store(tmp_path / p).read("clip_a")[4] for p in ("a.zarr", "c.zarr"))
    np.testing.assert_allclose(bf16, f16, rtol=2e-2, atol=2e-2)
    assert not np.array_equal(bf16, f16)


def test_checkpoint_weights_and_provenance(video_dir, tmp_path):
    ckpt = tmp_path / "w.pth"
    torch.save(to_official_state_dict(build_backbone("tiny", 4, 32, seed=7)), ckpt)
    check_checkpoint(tiny_cfg(checkpoint=ckpt))  # fits: no error
    run_extract(tiny_cfg(checkpoint=ckpt), video_dir, tmp_path / "ck.zarr", progress=False)
    run_extract(tiny_cfg(seed=7), video_dir, tmp_path / "r7.zarr", progress=False)
    run_extract(tiny_cfg(seed=0), video_dir, tmp_path / "r0.zarr", progress=False)
    prov = open_store(tmp_path / "ck.zarr").provenance
    assert prov["checkpoint"] == {"sha256": sha256_file(ckpt)}
    assert open_store(tmp_path / "r7.zarr").provenance["checkpoint"] == {"sha256": "random", "seed": 7}
    ck, r7, r0 = (store_arrays(tmp_path / p) for p in ("ck.zarr", "r7.zarr", "r0.zarr"))
    assert_same_arrays(ck, r7)  # loading the exported weights reproduces the model exactly
    assert not np.array_equal(ck["clip_a"][1][4], r0["clip_a"][1][4])


def test_rerun_extracts_only_missing_videos(video_dir, tmp_path):
    store = tmp_path / "s.zarr"
    run_extract(tiny_cfg(), video_dir, store, progress=False)
    before = store_arrays(store)
    kept = store / "videos" / "clip_a" / "zarr.json"
    mtime = kept.stat().st_mtime_ns
    shutil.rmtree(store / "videos" / "clip_b")
    again = run_extract(tiny_cfg(), video_dir, store, progress=False)
    assert (again.done, again.skipped_existing, again.failed) == (1, 2, 0)
    assert kept.stat().st_mtime_ns == mtime
    assert_same_arrays(store_arrays(store), before)  # bit-identical re-extraction
    assert run_extract(tiny_cfg(), video_dir, store, progress=False).done == 0


# ------------------------------------------------------------------------------------ the CLI
def cli_args(store: Path, *extra: str) -> list[str]:
    return ["--store", str(store), "--preset", "tiny", "--layers", "2", "--frames", "4",
            "--frame-step", "2", "--clip-stride", "3", "--resolution", "32", "--batch-clips", "4",
            "--device", "cpu", "--no-progress", *extra]


def test_cli_provenance_mismatch_refused_and_store_intact(video_dir, tmp_path):
    store = tmp_path / "s.zarr"
    runner = CliRunner()
    ok = runner.invoke(extract_main, [str(video_dir), *cli_args(store)])
    assert ok.exit_code == 0, ok.output
    assert "extracted 3 video(s)" in ok.output
    before = store_arrays(store)
    listing = sorted(str(p.relative_to(store)) for p in store.rglob("*") if "_locks" not in p.parts)
    bad = runner.invoke(extract_main, [str(video_dir), *cli_args(store), "--layers", "1"])
    assert bad.exit_code == 2
    assert "layers" in bad.output and "store has [2, 4], requested [1, 4]" in bad.output
    assert sorted(str(p.relative_to(store)) for p in store.rglob("*") if "_locks" not in p.parts) == listing
    assert_same_arrays(store_arrays(store), before)
    usage = runner.invoke(extract_main, [str(video_dir), *cli_args(store), "--resolution", "40"])
    assert usage.exit_code == 2 and "resolution 40" in usage.output


def test_cli_bad_files_are_recorded_and_others_done(video_dir, tmp_path):
    good = video_dir / "clip_a.mp4"
    corrupt = tmp_path / "corrupt.mp4"
    corrupt.write_bytes(good.read_bytes()[: good.stat().st_size // 3])
    empty = tmp_path / "empty.mp4"
    empty.write_bytes(b"")
    text = tmp_path / "readme.mp4"
    text.write_text("plain text renamed to .mp4\n")
    store = tmp_path / "s.zarr"
    res = CliRunner().invoke(extract_main, [str(video_dir), str(corrupt), str(empty), str(text),
                                            *cli_args(store)])
    assert res.exit_code == 1, res.output
    assert "3 FAILED" in res.output and f"losa-store failures {store}" in res.output
    reader = open_store(store)
    assert reader.videos() == ["clip_a", "clip_b", "clip_c"]
    fails = {f["video_id"]: f for f in reader.failures()}
    assert sorted(fails) == ["corrupt", "empty", "readme"]
    assert "empty file" in fails["empty"]["reason"]
    assert fails["readme"]["source"] == os.path.abspath(text)
    assert all(f["reason"] for f in fails.values())
    assert [p.name for p in (store / "_tmp").iterdir()] == ["zarr.json"]  # no leftovers


def test_cli_hostile_names_readable_by_id(tmp_path, make_video):
    names = ["dir with space/ünïcödé ñame.mp4", "a..b.mp4", "..x/..y.mp4", "odd #%~'\"$.mp4"]
    for i, name in enumerate(names):
        make_video(f"in/{name}", seconds=1.2, seed=i)
    explicit = make_video("..lead.mp4", seconds=1.2, seed=9)
    store = tmp_path / "s.zarr"
    res = CliRunner().invoke(extract_main, [str(tmp_path / "in"), str(explicit), *cli_args(store)])
    assert res.exit_code == 0, res.output
    reader = open_store(store)
    # folder discovery skips hidden ("..x/") entries; an explicit file is always taken
    expected = sorted(["dir with space/ünïcödé ñame", "a..b", "odd #%~'\"$", "..lead"])
    assert reader.videos() == expected
    for vid in expected:
        assert reader.video_info(vid)["video_id"] == vid
        assert reader.read(vid)[4].shape == (SAMPLING.num_clips(18), 1, 96)
    assert all(p.name not in ("..", ".") for p in (store / "videos").iterdir())


def test_bench_cli_reports_all_rates(tmp_path):
    out = tmp_path / "bench.json"
    res = CliRunner().invoke(bench_main, ["extract", "--preset", "tiny", "--resolution", "32", "--videos", "1",
                                          "--seconds", "1.5", "--batch-clips", "4", "--device", "cpu",
                                          "--peak-tflops", "1", "--out", str(out)])
    assert res.exit_code == 0, res.output
    report = json.loads(out.read_text())
    for key in ("decode_clips_s", "backbone_clips_s", "full_clips_s", "achieved_tflops", "mfu"):
        assert report[key] > 0, key
    assert report["clips"] == ClipSampling().num_clips(45)
    assert report["full_over_backbone"] == pytest.approx(report["full_clips_s"] / report["backbone_clips_s"])
    assert "| backbone only |" in res.output
    bad = CliRunner().invoke(bench_main, ["extract", "--preset", "tiny", "--out", str(tmp_path / "x.txt")])
    assert bad.exit_code == 2 and ".json or .md" in bad.output


def test_replace_keeps_validation():
    with pytest.raises(ExtractConfigError):
        replace(tiny_cfg(), grid=5)


def test_cli_checkpoint_errors_are_one_line_usage_errors(video_dir, tmp_path):
    runner = CliRunner()
    missing = runner.invoke(extract_main, [str(video_dir), *cli_args(tmp_path / "a.zarr"),
                                           "--checkpoint", str(tmp_path / "none.pth")])
    assert missing.exit_code == 2 and "checkpoint not found" in missing.output
    junk = tmp_path / "junk.pth"
    junk.write_bytes(b"definitely not a checkpoint")
    bad = runner.invoke(extract_main, [str(video_dir), *cli_args(tmp_path / "b.zarr"), "--checkpoint", str(junk)])
    assert bad.exit_code == 2 and f"checkpoint {junk} is a text file" in bad.output
    other = tmp_path / "vit_s.pth"
    torch.save(to_official_state_dict(build_backbone("vit-s", 4, 32)), other)
    wrong = runner.invoke(extract_main, [str(video_dir), *cli_args(tmp_path / "c.zarr"), "--checkpoint", str(other)])
    assert wrong.exit_code == 2 and "Traceback" not in wrong.output and "shape" in wrong.output
    assert not any((tmp_path / name).exists() for name in ("a.zarr", "b.zarr", "c.zarr"))
    with pytest.raises(ValueError, match="does not fit backbone tiny"):
        check_checkpoint(tiny_cfg(checkpoint=other))


def test_cli_reads_params_file(video_dir, tmp_path):
    params = tmp_path / "params.yaml"
    params.write_text(
        "extract:\n"
        f"  videos: [{json.dumps(str(video_dir))}]\n"
        "  preset: tiny\n  layers: [1]\n  frames: 4\n  clip_stride: 8\n  resolution: 32\n"
        "  device: cpu\n  progress: false\n"
    )
    res = CliRunner().invoke(extract_main, ["--store", str(tmp_path / "p.zarr"), "--params", str(params),
                                            "--clip-stride", "6"])
    assert res.exit_code == 0, res.output
    prov = open_store(tmp_path / "p.zarr").provenance
    assert prov["layers"] == [1, 4] and prov["sampling"]["clip_stride"] == 6  # command line wins
    (tmp_path / "typo.yaml").write_text("extract:\n  layer: [1]\n")
    typo = CliRunner().invoke(extract_main, ["--store", str(tmp_path / "t.zarr"), "--params",
                                             str(tmp_path / "typo.yaml"), str(video_dir)])
    assert typo.exit_code == 2 and "layer" in typo.output


def test_interrupt_aborts_cleanly_and_rerun_completes(video_dir, tmp_path, monkeypatch):
    from stages.extract import run as extract

    store = tmp_path / "s.zarr"
    original = extract.ClipEncoder.encode
    calls = {"n": 0}

    def interrupted(self, frames, index):
        calls["n"] += 1
        if calls["n"] == 4:  # clip_a takes 2 batches of 4 clips: this is clip_b's second batch
            raise KeyboardInterrupt
        return original(self, frames, index)

    monkeypatch.setattr(extract.ClipEncoder, "encode", interrupted)
    with pytest.raises(KeyboardInterrupt):
        run_extract(tiny_cfg(), video_dir, store, progress=False)
    reader = open_store(store)
    assert reader.videos() == ["clip_a"] and reader.failures() == []
    assert [p.name for p in (store / "_tmp").iterdir()] == ["zarr.json"]
    monkeypatch.setattr(extract.ClipEncoder, "encode", original)
    again = run_extract(tiny_cfg(), video_dir, store, progress=False)
    assert (again.done, again.skipped_existing) == (2, 1)
