"""Crash safety and concurrency of extraction with real processes: two extractors on one store,
and resume after SIGKILL giving a store bit-identical to an uninterrupted run."""

from __future__ import annotations

import os
import re
import signal
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pytest
from click.testing import CliRunner

from losa.encoder.sampling import ClipSampling
from pipeline.cli_extract import main as extract_main
from stages.extract.run import run_extract
from stages.extract.config import ExtractConfig
from storage import open_store

REPO = Path(__file__).resolve().parents[3]
SAMPLING = ClipSampling(frames_per_clip=4, frame_step=2, clip_stride=3)
ARGS = ["--preset", "tiny", "--layers", "1,3", "--frames", "4", "--frame-step", "2",
        "--clip-stride", "3", "--resolution", "32", "--batch-clips", "2", "--chunk-steps", "4",
        "--device", "cpu", "--no-progress"]


pytestmark = pytest.mark.usefixtures("one_torch_thread")


def cfg() -> ExtractConfig:
    """The in-process twin of ARGS."""
    return ExtractConfig(preset="tiny", layers=[1, 3], sampling=SAMPLING, resolution=32,
                         batch_clips=2, chunk_steps=4, device="cpu")


def extractor(videos: Path, store: Path, *extra: str) -> subprocess.Popen:
    """A `losa-extract` process (single-threaded torch, like the in-process reference)."""
    env = {**os.environ, "OMP_NUM_THREADS": "1", "MKL_NUM_THREADS": "1", "PYTHONUNBUFFERED": "1"}
    cmd = [sys.executable, "-m", "pipeline.cli_extract", str(videos), "--store", str(store), *ARGS, *extra]
    return subprocess.Popen(cmd, cwd=REPO, env=env, stdout=subprocess.PIPE, stderr=subprocess.STDOUT,
                            text=True)


@pytest.fixture
def many_videos(make_video, tmp_path) -> Path:
    for i in range(8):
        make_video(f"many/v{i}.mp4", seconds=4.0, fps=15, size=48, seed=i)
    return tmp_path / "many"


def snapshot(store: Path) -> dict:
    """Everything a consumer reads: ids, times, attrs (minus timing) and raw layer values."""
    reader = open_store(store)
    out = {}
    for vid in reader.videos():
        info = reader.video_info(vid)
        info["extra"] = {k: v for k, v in info["extra"].items() if k != "seconds"}
        arrays = {k: v.tobytes() for k, v in reader.read(vid).items()}
        out[vid] = (reader.times(vid).tobytes(), info, arrays)
    return out


def test_two_concurrent_extractors_share_one_store(many_videos, tmp_path):
    store = tmp_path / "shared.zarr"
    procs = [extractor(many_videos, store) for _ in range(2)]
    outputs = [p.communicate(timeout=120)[0] for p in procs]
    assert [p.returncode for p in procs] == [0, 0], outputs
    done = [int(re.search(r"extracted (\d+) video", out).group(1)) for out in outputs]
    assert sum(done) == 8, outputs  # every video extracted by exactly one process
    reader = open_store(store)
    assert reader.videos() == [f"v{i}" for i in range(8)] and reader.failures() == []
    assert [p.name for p in (store / "_tmp").iterdir()] == ["zarr.json"]
    for vid in reader.videos():
        assert reader.read(vid)[3].shape == (SAMPLING.num_clips(60), 1, 96)


def test_two_shard_jobs_write_one_store(many_videos, tmp_path):
    """The scale-out recipe: one `--shard i/n` job per worker (any scheduler), one shared store."""
    from stages.extract.run import discover_videos, select_shard

    store = tmp_path / "sharded.zarr"
    procs = [extractor(many_videos, store, "--shard", f"{i}/2") for i in range(2)]
    outputs = [p.communicate(timeout=120)[0] for p in procs]
    assert [p.returncode for p in procs] == [0, 0], outputs
    items = discover_videos([many_videos])
    for i, out in enumerate(outputs):  # each job did exactly its own shard
        expected = len(select_shard(items, (i, 2)))
        assert f"extracted {expected} video(s)" in out, out
    reader = open_store(store)
    assert reader.videos() == [f"v{i}" for i in range(8)] and reader.failures() == []
    reference = tmp_path / "single.zarr"
    run_extract(cfg(), many_videos, reference, progress=False)
    assert snapshot(store) == snapshot(reference)


def test_resume_after_sigkill_is_bit_identical(many_videos, tmp_path):
    reference = tmp_path / "reference.zarr"
    run_extract(cfg(), many_videos, reference, progress=False)

    store = tmp_path / "killed.zarr"
    proc = extractor(many_videos, store)
    deadline = time.monotonic() + 120
    while not list((store / "videos").glob("*/zarr.json")):
        assert proc.poll() is None, f"extractor ended before its first commit: {proc.communicate()[0]}"
        assert time.monotonic() < deadline, "no video committed in time"
        time.sleep(0.01)
    os.kill(proc.pid, signal.SIGKILL)
    proc.communicate(timeout=30)
    assert proc.returncode == -signal.SIGKILL
    committed = len(open_store(store).videos())
    assert 1 <= committed < 8, "the run finished before it could be killed"

    res = CliRunner().invoke(extract_main, [str(many_videos), "--store", str(store), *ARGS])
    assert res.exit_code == 0, res.output
    assert f"extracted {8 - committed} video(s)" in res.output
    assert f"{committed} already present" in res.output
    assert snapshot(store) == snapshot(reference)
    assert [p.name for p in (store / "_tmp").iterdir()] == ["zarr.json"]


@pytest.mark.slow
def test_worker_processes_match_single_process(video_dir, tmp_path):
    single = tmp_path / "single.zarr"
    multi = tmp_path / "multi.zarr"
    run_extract(cfg(), video_dir, single, progress=False)
    summary = run_extract(cfg(), video_dir, multi, workers=2, progress=False)
    assert (summary.done, summary.failed, summary.skipped_existing, summary.busy) == (3, 0, 0, 0)
    a, b = snapshot(single), snapshot(multi)
    assert sorted(a) == sorted(b)
    for vid in a:
        assert a[vid][0] == b[vid][0]
        for layer in a[vid][2]:  # thread counts may differ between the runs: compare closely
            x = np.frombuffer(a[vid][2][layer], np.float32)
            y = np.frombuffer(b[vid][2][layer], np.float32)
            np.testing.assert_allclose(x, y, rtol=1e-3, atol=1e-3)
