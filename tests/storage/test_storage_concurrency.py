"""Activation store under real concurrency: two writer processes and a SIGKILL mid-write.

The worker side lives in this module too (``python tests/test_storage_concurrency.py ARGS``), so the
test and its subprocesses share one definition of the deterministic per-video data.
"""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
import zlib
from pathlib import Path

import numpy as np

REPO = Path(__file__).resolve().parents[2]
if str(REPO) not in sys.path:
    sys.path.insert(0, str(REPO))

from storage import ZarrActivationStore, open_store  # noqa: E402

PROV = {"preset": "tiny", "layers": [3, 6], "seed": 0}
LAYERS = (3, 6)
CELLS, CHANNELS, BLOCK = 2, 16, 5


def video_data(video_id: str) -> tuple[dict[int, np.ndarray], np.ndarray, dict]:
    """Deterministic arrays/times/attrs of one video (length depends on the id)."""
    rng = np.random.default_rng(zlib.crc32(video_id.encode()))
    steps = 18 + zlib.crc32(video_id.encode()) % 17
    arrays = {k: rng.standard_normal((steps, CELLS, CHANNELS)).astype(np.float32) for k in LAYERS}
    times = (np.arange(steps) * 4 + 8) / 25.0
    return arrays, times, {"fps": 25.0, "source": f"in/{video_id}.mp4", "num_frames": steps * 4 + 12}


def write_blocks(store: ZarrActivationStore, video_id: str, stop_after: int | None = None,
                 pause: float = 0.0) -> None:
    """Write a claimed video in blocks of BLOCK steps; with `stop_after`, return (uncommitted)
    after that many blocks."""
    arrays, times, attrs = video_data(video_id)
    steps = len(times)
    writer = store.begin_video(video_id, layers=list(LAYERS), cells=CELLS, channels=CHANNELS,
                               num_steps=steps, dtype="float16", chunk_steps=8)
    for i, t0 in enumerate(range(0, steps, BLOCK)):
        if stop_after is not None and i == stop_after:
            return
        writer.write(t0, {k: v[t0 : t0 + BLOCK] for k, v in arrays.items()})
        time.sleep(pause)
    writer.commit(times, attrs)


def _worker(args: dict) -> None:
    store = ZarrActivationStore.create_or_open(args["store"], PROV)
    while not os.path.exists(args["go"]):
        time.sleep(0.005)
    if args["mode"] == "kill":
        with store.claim(args["videos"][0]) as mine:
            assert mine
            write_blocks(store, args["videos"][0], stop_after=2)
            Path(args["ready"]).touch()
            time.sleep(120)  # killed here, holding the claim with a half-written video
        return
    for video_id in args["videos"]:
        with store.claim(video_id) as mine:
            if not mine:
                continue
            with open(args["log"], "a", encoding="utf-8") as fh:  # O_APPEND: one line per claim
                fh.write(f"{os.getpid()}\t{video_id}\n")
            write_blocks(store, video_id, pause=0.003)


def _spawn(args: dict) -> subprocess.Popen:
    env = {**os.environ, "PYTHONPATH": os.pathsep.join([str(REPO), os.environ.get("PYTHONPATH", "")])}
    return subprocess.Popen([sys.executable, str(Path(__file__).resolve()), json.dumps(args)],
                            cwd=REPO, env=env, stdout=subprocess.PIPE, stderr=subprocess.STDOUT)


def _check_video(reader, video_id: str) -> None:
    arrays, times, attrs = video_data(video_id)
    out = reader.read(video_id)
    for k in LAYERS:
        np.testing.assert_array_equal(out[k], arrays[k].astype(np.float16).astype(np.float32))
    np.testing.assert_array_equal(reader.times(video_id), times)
    assert reader.video_info(video_id)["source"] == attrs["source"]


def _tree(root: Path) -> dict[str, bytes]:
    return {str(p.relative_to(root)): p.read_bytes() for p in sorted(root.rglob("*")) if p.is_file()}


def test_two_processes_overlapping_videos(tmp_path):
    ids = [f"vid_{i:02d}" for i in range(10)] + ["sub/dir clip", "ünï"]
    store_path, log, go = tmp_path / "s.zarr", tmp_path / "claims.log", tmp_path / "go"
    procs = [
        _spawn({"mode": "write", "store": str(store_path), "go": str(go), "log": str(log),
                "videos": ids[:10]}),
        _spawn({"mode": "write", "store": str(store_path), "go": str(go), "log": str(log),
                "videos": list(reversed(ids[2:]))}),
    ]
    deadline = time.monotonic() + 60
    while not (store_path / "zarr.json").exists() and time.monotonic() < deadline:
        time.sleep(0.01)  # both processes race through create_or_open
    go.touch()
    seen: set[str] = set()
    while any(p.poll() is None for p in procs) and time.monotonic() < deadline:
        # a concurrent reader only ever sees complete videos
        reader = open_store(store_path)
        for video_id in reader.videos():
            if video_id not in seen:
                _check_video(reader, video_id)
                seen.add(video_id)
        time.sleep(0.02)
    outputs = [p.communicate(timeout=30)[0].decode() for p in procs]
    assert [p.returncode for p in procs] == [0, 0], outputs
    lines = [line.split("\t") for line in log.read_text("utf-8").splitlines()]
    claimed = sorted(video_id for _pid, video_id in lines)
    assert claimed == sorted(ids), "every video must be written exactly once"
    reader = open_store(store_path)
    assert reader.videos() == sorted(ids)
    for video_id in ids:
        _check_video(reader, video_id)
    assert sorted(os.listdir(store_path / "_tmp")) == ["zarr.json"]
    assert reader.failures() == [] and reader.provenance == PROV


def test_sigkill_mid_write_then_rerun_equals_clean_write(tmp_path):
    victim = "victim/clip 01"
    store_path, go, ready = tmp_path / "s.zarr", tmp_path / "go", tmp_path / "ready"
    go.touch()
    proc = _spawn({"mode": "kill", "store": str(store_path), "go": str(go), "ready": str(ready),
                   "videos": [victim]})
    try:
        deadline = time.monotonic() + 60
        while not ready.exists():
            assert proc.poll() is None, proc.communicate()[0].decode()
            assert time.monotonic() < deadline, "worker never became ready"
            time.sleep(0.01)
        store = ZarrActivationStore.create_or_open(store_path, PROV)
        with store.claim(victim) as mine:
            assert mine is False  # a live process holds the claim
        assert open_store(store_path).videos() == []
        tmp_dir = store_path / "_tmp" / "victim~2fclip~2001"
        assert tmp_dir.is_dir()
    finally:
        proc.send_signal(signal.SIGKILL)
        proc.communicate(timeout=30)
    assert proc.returncode == -signal.SIGKILL
    assert tmp_dir.is_dir() and open_store(store_path).videos() == []  # leftover, invisible
    assert not store.is_complete(victim)
    with store.claim(victim) as mine:  # the kernel released the dead process's lock
        assert mine and not tmp_dir.exists()
        write_blocks(store, victim)
    clean = ZarrActivationStore.create_or_open(tmp_path / "clean.zarr", PROV)
    with clean.claim(victim) as mine:
        assert mine
        write_blocks(clean, victim)
    assert _tree(store_path / "videos") == _tree(tmp_path / "clean.zarr" / "videos")
    assert sorted(os.listdir(store_path / "_tmp")) == ["zarr.json"]
    _check_video(open_store(store_path), victim)


if __name__ == "__main__":
    _worker(json.loads(sys.argv[1]))
