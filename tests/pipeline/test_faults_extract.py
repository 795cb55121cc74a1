"""Fault injection on `losa-extract` and the store: disk full, read-only file systems, hostile and
over-long names.  Every case must end in bounded time (pytest timeout) with a logged failure or a
one-line error and a documented exit code, and leave a readable store.  See docs/reliability.md."""

from __future__ import annotations

import errno
import os
import subprocess
import uuid
from contextlib import contextmanager
from pathlib import Path

import numpy as np
import pytest
from click.testing import CliRunner

from pipeline.cli_extract import main as extract_main
from stages.extract.run import discover_videos, run_extract, select_shard
from storage import open_store, safe_key, unsafe_key
from storage.keys import MAX_KEY_BYTES, is_hashed_key
from storage.zarr_store import VideoWriter

pytestmark = [pytest.mark.usefixtures("one_torch_thread"), pytest.mark.timeout(120)]


def cli_args(store: Path, *extra: str) -> list[str]:
    return ["--store", str(store), "--preset", "tiny", "--layers", "2", "--frames", "4",
            "--frame-step", "2", "--clip-stride", "3", "--resolution", "32", "--batch-clips", "4",
            "--device", "cpu", "--no-progress", *extra]


def enospc_in_final_flush(monkeypatch) -> list[str]:
    """Make the last write of every video fail like a full disk; returns the ids it hit."""
    hit: list[str] = []
    real = VideoWriter.write

    def write(self, t0, arrays):
        n = len(next(iter(arrays.values())))
        if t0 + n == self.num_steps:
            hit.append(self.video_id)
            raise OSError(errno.ENOSPC, "No space left on device", str(self.tmp / "layer_02" / "c"))
        return real(self, t0, arrays)

    monkeypatch.setattr(VideoWriter, "write", write)
    return hit


# ------------------------------------------------------------------------- 1. disk full, no hang
def test_disk_full_in_final_flush_stops_cleanly_and_store_stays_readable(video_dir, tmp_path, monkeypatch):
    store = tmp_path / "s.zarr"
    hit = enospc_in_final_flush(monkeypatch)
    # default chunk size: every short video is written in the final flush (the case that hung)
    res = CliRunner().invoke(extract_main, [str(video_dir), *cli_args(store)])
    assert res.exit_code == 4, res.output
    assert hit and "No space left on device" in res.output and "rerun" in res.output
    assert "Traceback" not in res.output
    reader = open_store(store)                                   # readable, nothing half-written
    assert reader.videos() == []
    fails = reader.failures()
    assert [f["video_id"] for f in fails] == hit[:1]
    assert "No space left on device (ENOSPC)" in fails[0]["reason"]
    assert [p.name for p in (store / "_tmp").iterdir()] == ["zarr.json"]
    monkeypatch.undo()                                           # space freed: a rerun completes
    again = CliRunner().invoke(extract_main, [str(video_dir), *cli_args(store)])
    assert again.exit_code == 0, again.output
    assert open_store(store).videos() == ["clip_a", "clip_b", "clip_c"]
    assert open_store(store).failures() == []


def test_writer_error_with_small_chunks_is_a_logged_failure(video_dir, tmp_path, monkeypatch):
    from stages.extract.config import ExtractConfig
    from losa.encoder.sampling import ClipSampling

    cfg = ExtractConfig(preset="tiny", layers=[2], resolution=32, batch_clips=4, chunk_steps=2,
                        sampling=ClipSampling(4, 2, 3), device="cpu")
    calls = {"n": 0}
    real = VideoWriter.write

    def write(self, t0, arrays):  # a non-space I/O error on one file outside the store's reach
        calls["n"] += 1
        if self.video_id == "clip_b":
            raise OSError(errno.EINVAL, "Invalid argument", "/elsewhere/x")
        return real(self, t0, arrays)

    monkeypatch.setattr(VideoWriter, "write", write)
    summary = run_extract(cfg, video_dir, tmp_path / "s.zarr", progress=False)
    assert (summary.done, summary.failed, summary.stopped) == (2, 1, None)   # the run went on
    fail = open_store(tmp_path / "s.zarr").failures()[0]
    assert fail["video_id"] == "clip_b" and "Invalid argument (EINVAL)" in fail["reason"]


# ------------------------------------------------------------- real file systems (root: tmpfs)
@contextmanager
def tmpfs(path: Path, size: str):
    path.mkdir(parents=True, exist_ok=True)
    try:
        subprocess.run(["mount", "-t", "tmpfs", "-o", f"size={size}", "tmpfs", str(path)],
                       check=True, capture_output=True, timeout=20)
    except (OSError, subprocess.SubprocessError):
        pytest.skip("cannot mount a tmpfs here (needs root)")
    try:
        yield path
    finally:
        subprocess.run(["umount", "-l", str(path)], capture_output=True, timeout=20)


def remount(path: Path, mode: str) -> None:
    subprocess.run(["mount", "-o", f"remount,{mode}", str(path)], check=True, capture_output=True, timeout=20)


def test_real_full_tmpfs_stops_cleanly(tmp_path, make_video):
    make_video("videos/a.mp4", seconds=1.2)
    with tmpfs(tmp_path / "fs", "1m") as fs:
        store = fs / "s.zarr"
        assert CliRunner().invoke(extract_main, [str(tmp_path / "videos"), *cli_args(store)]).exit_code == 0
        fd = os.open(fs / "filler", os.O_WRONLY | os.O_CREAT)   # fill the file system ...
        try:
            while os.write(fd, b"\0" * 4096):
                pass
        except OSError:
            pass
        finally:
            os.close(fd)
        os.truncate(fs / "filler", max(0, os.path.getsize(fs / "filler") - 8192))  # ... but 8 KiB
        make_video("videos/big.mp4", seconds=8.0, seed=5)       # ~40 steps x 2 layers x 3 KiB
        res = CliRunner().invoke(extract_main, [str(tmp_path / "videos"), *cli_args(store, "--grid", "1")])
        assert res.exit_code == 4, res.output                    # bounded time, clean stop
        assert "Traceback" not in res.output and "No space left on device" in res.output
        reader = open_store(store)
        assert reader.videos() == ["a"] and reader.read("a")[4].shape[1:] == (1, 96)


def test_read_only_file_system_one_line_exit_4(tmp_path, make_video):
    make_video("videos/a.mp4", seconds=1.2)
    with tmpfs(tmp_path / "fs", "4m") as fs:
        store = fs / "s.zarr"
        assert CliRunner().invoke(extract_main, [str(tmp_path / "videos"), *cli_args(store)]).exit_code == 0
        make_video("videos/b.mp4", seconds=1.2, seed=2)
        remount(fs, "ro")
        for target in (store, fs / "new.zarr"):                  # existing store / a new one
            res = CliRunner().invoke(extract_main, [str(tmp_path / "videos"), *cli_args(target)])
            assert res.exit_code == 4, res.output
            lines = [ln for ln in res.output.splitlines() if not ln.startswith("warning")]
            assert len(lines) == 1 and "Read-only file system" in lines[0] and str(fs) in lines[0]
        assert open_store(store).videos() == ["a"]               # still readable
        remount(fs, "rw")


# ------------------------------------------------------------------------ 3. names and keys
def test_long_and_odd_names_never_stop_extraction(tmp_path, make_video):
    long_name = "x" * 230 + " with spaces"                       # 242 chars → ~260 bytes escaped
    names = [f"{long_name}.mp4", "-rf.mp4", "é" * 120 + ".mp4", "plain.mp4"]
    for i, n in enumerate(names):  # written under a short name (the writer's temp name is longer)
        os.rename(make_video(f"in/t{i}.mp4", seconds=1.2, seed=i), tmp_path / "in" / n)
    raw = os.fsencode(tmp_path / "in") + b"/bad\xffbyte.mp4"     # a name that is not UTF-8
    os.link(tmp_path / "in" / "plain.mp4", raw)
    store = tmp_path / "s.zarr"
    res = CliRunner().invoke(extract_main, [str(tmp_path / "in"), *cli_args(store)])
    assert res.exit_code == 1, res.output                        # ran to the end
    assert "1 FAILED (bad\\xffbyte)" in res.output
    reader = open_store(store)
    ids = {it.video_id for it in discover_videos(tmp_path / "in")} - {"bad\\xffbyte"}
    assert set(reader.videos()) == ids and len(ids) == 4
    (fail,) = reader.failures()
    assert "not valid UTF-8" in fail["reason"] and fail["source"].endswith("bad\\xffbyte.mp4")
    for vid in ids:
        assert reader.read(vid)[4].shape[1:] == (1, 96)
    for entry in (store / "videos").iterdir():
        assert len(os.fsencode(entry.name)) <= MAX_KEY_BYTES and not entry.name.startswith("-")
    assert any(is_hashed_key(e.name) for e in (store / "videos").iterdir())


def test_keys_injective_bounded_and_safe():
    ids = ["a" * 300, "a" * 299 + "b", "a" * 300 + "/", "-x", "x", "~2dx", "é" * 200, "a b" * 100]
    keys = [safe_key(v) for v in ids]
    assert len(set(keys)) == len(keys)
    assert all(len(k.encode()) <= MAX_KEY_BYTES and not k.startswith(("-", ".", "_")) for k in keys)
    assert unsafe_key(safe_key("-x")) == "-x" and unsafe_key(safe_key("x")) == "x"
    assert safe_key("a" * 300) == safe_key("a" * 300)            # deterministic
    assert not is_hashed_key(safe_key("a" * 240)) and is_hashed_key(safe_key("a" * 241))
    with pytest.raises(ValueError):
        unsafe_key(safe_key("a" * 300))                          # its id lives in the attrs
    rng = np.random.default_rng(0)
    many = {"".join(rng.choice(list("ab~/ -é"), size=int(n))) for n in rng.integers(1, 400, 500)}
    assert len({safe_key(v) for v in many}) == len(many)


def test_shard_of_undecodable_name_does_not_raise(tmp_path):
    (tmp_path / "v").mkdir()
    p = os.fsencode(tmp_path / "v") + b"/z\xfe.mp4"
    Path(os.fsdecode(p)).write_bytes(b"x")
    items = discover_videos(tmp_path / "v")
    assert len(select_shard(items, (0, 1))) == 1


def test_unwritable_name_is_logged_and_run_goes_on(video_dir, tmp_path, monkeypatch):
    """A file system that refuses one name (ENAMETOOLONG, EINVAL): that video fails, the rest go on."""
    import storage.zarr_store as zs

    real = zs.ZarrActivationStore.claim

    @contextmanager
    def claim(self, video_id):
        if video_id == "clip_b":
            raise OSError(errno.ENAMETOOLONG, "File name too long", str(self.path / "_locks" / "clip_b.lock"))
        with real(self, video_id) as mine:
            yield mine

    monkeypatch.setattr(zs.ZarrActivationStore, "claim", claim)
    store = tmp_path / f"s{uuid.uuid4().hex[:4]}.zarr"
    res = CliRunner().invoke(extract_main, [str(video_dir), *cli_args(store)])
    assert res.exit_code == 1, res.output
    assert "1 FAILED (clip_b)" in res.output and "File name too long" in res.output
    assert open_store(store).videos() == ["clip_a", "clip_c"]


def test_truncated_mp4_gets_a_specific_reason(video_dir, tmp_path):
    good = (video_dir / "clip_a.mp4").read_bytes()
    cut = tmp_path / "cut.mp4"
    cut.write_bytes(good[: len(good) // 3])            # an interrupted download: no moov atom
    store = tmp_path / "s.zarr"
    res = CliRunner().invoke(extract_main, [str(cut), str(video_dir / "clip_b.mp4"), *cli_args(store)])
    assert res.exit_code == 1, res.output
    (fail,) = open_store(store).failures()
    assert "truncated MP4" in fail["reason"] and "moov" in fail["reason"]
    assert open_store(store).videos() == ["clip_b"]
