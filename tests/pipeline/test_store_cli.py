"""`losa-store info / failures / export` on a store written by the extraction stage."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
import torch
from click.testing import CliRunner

from losa.encoder.sampling import ClipSampling
from pipeline.cli_store import human_bytes, main
from stages.extract.run import run_extract
from stages.extract.config import ExtractConfig
from stages.demo.videogen import moving_square_frames, write_mp4
from storage import open_store

SAMPLING = ClipSampling(frames_per_clip=4, frame_step=1, clip_stride=2)


@pytest.fixture(scope="module")
def store(tmp_path_factory) -> Path:
    """Two good videos (one in a sub-folder) and one text file posing as a video."""
    root = tmp_path_factory.mktemp("store_cli")
    write_mp4(root / "in" / "alpha.mp4", moving_square_frames(20, 48, seed=1), fps=10)
    write_mp4(root / "in" / "set 2" / "beta.mp4", moving_square_frames(13, 48, seed=2), fps=10)
    bogus = root / "bogus.mp4"
    bogus.write_text("not a video")
    cfg = ExtractConfig(preset="tiny", layers=[1, 2], sampling=SAMPLING, resolution=32,
                        grid=2, temporal="keep", batch_clips=4, device="cpu")
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    try:
        summary = run_extract(cfg, [root / "in", bogus], root / "s.zarr", progress=False)
    finally:
        torch.set_num_threads(threads)
    assert (summary.done, summary.failed) == (2, 1)
    return root / "s.zarr"


def invoke(*args: str):
    return CliRunner().invoke(main, [str(a) for a in args])


def test_info_reports_contents_sizes_and_recipe(store):
    res = invoke("info", store)
    assert res.exit_code == 0, res.output
    out = res.output
    assert "2 complete" in out and f"{SAMPLING.num_clips(20) + SAMPLING.num_clips(13)} steps" in out
    assert "[1, 2, 4]" in out and "1: 8x96" in out  # 2 tubelet slots x 2x2 cells, 96 channels
    assert "compression x" in out and "failures     1" in out and "losa-store failures" in out
    assert "tiny, weights random (seed 0)" in out and "raw block outputs (pre-norm)" in out
    data = json.loads(invoke("info", store, "--json").output)
    summary = data["summary"]
    assert summary["videos"] == 2 and summary["layers"] == [1, 2, 4] and summary["failures"] == 1
    assert summary["bytes_on_disk"] > 0 and summary["compression_ratio"] > 0
    assert data["provenance"]["tokens_layout"] == [2, 2, 2]


def test_failures_lists_reason_and_source(store):
    res = invoke("failures", store)
    assert res.exit_code == 0
    line = [x for x in res.output.splitlines() if "\t" in x]  # records are tab-separated
    assert len(line) == 1 and line[0].startswith("bogus\t") and "cannot open as a video" in line[0]
    records = json.loads(invoke("failures", store, "--json").output)
    assert [r["video_id"] for r in records] == ["bogus"] and records[0]["source"].endswith("bogus.mp4")


def test_export_npy_default_and_chosen_layer(store, tmp_path):
    reader = open_store(store)
    res = invoke("export", store, "--format", "npy", "--out", tmp_path / "deep")
    assert res.exit_code == 0, res.output
    assert "layer 4" in res.output
    index = json.loads((tmp_path / "deep" / "index.json").read_text())
    assert sorted(v["video_id"] for v in index.values()) == ["alpha", "set 2/beta"]
    for key, meta in index.items():
        feats = np.load(tmp_path / "deep" / f"{key}.npy")
        expected = reader.read(meta["video_id"], [4])[4].mean(axis=1)
        assert feats.shape == (meta["num_steps"], 96)
        np.testing.assert_allclose(feats, expected, rtol=1e-6)
    res = invoke("export", store, "--format", "npy", "--layer", "2", "--cells", "flatten",
                 "--out", tmp_path / "l2")
    assert res.exit_code == 0, res.output
    assert np.load(tmp_path / "l2" / "alpha.npy").shape == (SAMPLING.num_clips(20), 8 * 96)


def test_export_hdf5_round_trips(store, tmp_path):
    out = tmp_path / "copy.h5"
    res = invoke("export", store, "--format", "hdf5", "--out", out)
    assert res.exit_code == 0, res.output
    src, dst = open_store(store), open_store(out)
    assert dst.videos() == src.videos() and dst.provenance == src.provenance
    for vid in src.videos():
        np.testing.assert_array_equal(dst.times(vid), src.times(vid))
        for layer, arr in src.read(vid).items():
            np.testing.assert_array_equal(dst.read(vid, [layer])[layer], arr)
    assert "2 complete" in invoke("info", out).output
    again = invoke("export", store, "--format", "hdf5", "--out", out)
    assert again.exit_code != 0 and "already exists" in again.output
    assert invoke("export", store, "--format", "hdf5", "--out", out, "--overwrite").exit_code == 0


def test_clear_errors(store, tmp_path):
    missing = invoke("info", tmp_path / "nope.zarr")
    assert missing.exit_code == 1 and "not found" in missing.output
    assert len(missing.output.strip().splitlines()) == 1
    bad_layer = invoke("export", store, "--format", "npy", "--layer", "3", "--out", tmp_path / "x")
    assert bad_layer.exit_code == 1 and "layer 3 not stored" in bad_layer.output
    (tmp_path / "plain").mkdir()
    assert "not a LoSA activation store" in invoke("info", tmp_path / "plain").output
    mixed = invoke("export", store, "--format", "hdf5", "--layer", "2", "--out", tmp_path / "y.h5")
    assert mixed.exit_code == 2 and "--layer applies to --format npy only" in mixed.output


def test_human_bytes():
    assert human_bytes(512) == "512 B"
    assert human_bytes(1536) == "1.5 KiB"
    assert human_bytes(5 * 1024**3) == "5.0 GiB"
