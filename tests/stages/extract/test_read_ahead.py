"""Extraction reads the next video ahead: its probe and first batches overlap the current video's last
forward passes (`stages.extract.run._worker_loop`), without changing what is stored or who extracts what."""
from __future__ import annotations

import threading
from contextlib import nullcontext

import numpy as np
import pytest

import stages.extract.prefetch as prefetch
import stages.extract.run as run_mod
from losa.encoder.sampling import ClipSampling
from stages.extract.config import ExtractConfig
from storage import open_store

pytestmark = pytest.mark.usefixtures("one_torch_thread")


def _cfg() -> ExtractConfig:
    return ExtractConfig(preset="tiny", layers=[2], resolution=32, batch_clips=2, chunk_steps=3, device="cpu",
                         sampling=ClipSampling(frames_per_clip=4, frame_step=2, clip_stride=3))


def _arrays(path) -> dict:
    r = open_store(path)
    return {v: (r.times(v), r.read(v)) for v in r.videos()}


@pytest.fixture
def log(monkeypatch):
    """Events in order: ("read", id) when a video's reader starts, ("commit", id) when it is committed."""
    events: list[tuple[str, str]] = []
    real_start, real_one = run_mod.start_decoding, run_mod._extract_one

    def start(item, cfg, threads):
        events.append(("read", item.video_id))
        return real_start(item, cfg, threads)

    def one(store, item, *a, **k):
        n = real_one(store, item, *a, **k)
        events.append(("commit", item.video_id))
        return n

    monkeypatch.setattr(run_mod, "start_decoding", start)
    monkeypatch.setattr(run_mod, "_extract_one", one)
    return events


def test_next_video_is_read_before_the_current_one_is_committed(video_dir, tmp_path, log, monkeypatch):
    summary = run_mod.run_extract(_cfg(), video_dir, tmp_path / "a.zarr", progress=False)
    assert summary.done == 3
    assert log == [("read", "clip_a"), ("read", "clip_b"), ("commit", "clip_a"),
                   ("read", "clip_c"), ("commit", "clip_b"), ("commit", "clip_c")]
    # the same store as without reading ahead
    monkeypatch.setattr(prefetch.BackgroundIterator, "finished", property(lambda self: False))
    run_mod.run_extract(_cfg(), video_dir, tmp_path / "b.zarr", progress=False)
    a, b = _arrays(tmp_path / "a.zarr"), _arrays(tmp_path / "b.zarr")
    assert sorted(a) == sorted(b) == ["clip_a", "clip_b", "clip_c"]
    for v in a:
        np.testing.assert_array_equal(a[v][0], b[v][0])
        for layer in a[v][1]:
            np.testing.assert_array_equal(a[v][1][layer], b[v][1][layer])


def test_a_read_ahead_video_claimed_elsewhere_is_left_and_closed(video_dir, tmp_path, log, monkeypatch):
    store_path = tmp_path / "s.zarr"
    busy = {"clip_b"}
    real_open = run_mod._open_store

    def open_store_busy(path, provenance):
        store = real_open(path, provenance)
        claim = store.claim

        def claim_or_busy(video_id):
            if video_id in busy:
                return nullcontext(False)  # another live process holds it
            return claim(video_id)

        store.claim = claim_or_busy
        return store

    monkeypatch.setattr(run_mod, "_open_store", open_store_busy)
    summary = run_mod.run_extract(_cfg(), video_dir, store_path, progress=False)
    assert (summary.done, summary.busy, summary.failed) == (2, 1, 0)
    assert ("read", "clip_b") in log and ("commit", "clip_b") not in log  # read ahead, then left to its holder
    assert open_store(store_path).videos() == ["clip_a", "clip_c"]
    assert not any(t.name == "decode" and t.is_alive() for t in threading.enumerate())  # closed, joined


def test_a_failing_next_video_is_recorded_for_itself(video_dir, tmp_path, log):
    (video_dir / "clip_b.mp4").write_bytes(b"not a video")
    summary = run_mod.run_extract(_cfg(), video_dir, tmp_path / "s.zarr", progress=False)
    assert (summary.done, summary.failed) == (2, 1) and summary.failed_videos == ["clip_b"]
    reader = open_store(tmp_path / "s.zarr")
    assert reader.videos() == ["clip_a", "clip_c"]
    assert [f["video_id"] for f in reader.failures()] == ["clip_b"]
