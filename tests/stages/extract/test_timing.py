"""Step times: frame-rate formula for constant-rate files, presentation timestamps for
variable-frame-rate files (recorded as the video's ``timing`` attr), short videos inside their
duration, and uneven step times honoured by the seconds ↔ steps map."""

from __future__ import annotations

import fractions
from pathlib import Path

import numpy as np
import pytest

from losa.encoder.sampling import ClipSampling
from stages.data.dataset import step_geometry
from stages.extract.config import ExtractConfig
from stages.extract.run import run_extract
from stages.extract.timing import frame_start_times, step_times
from storage import open_store

pytestmark = [pytest.mark.usefixtures("one_torch_thread"), pytest.mark.timeout(120)]

SAMPLING = ClipSampling(frames_per_clip=4, frame_step=1, clip_stride=4)


def write_vfr(path: Path, pts_ms: list[int], size: int = 32) -> Path:
    """An H.264 mp4 whose frames carry the given presentation times (ms): variable frame rate."""
    import av

    path.parent.mkdir(parents=True, exist_ok=True)
    with av.open(str(path), "w") as c:
        s = c.add_stream("libx264", rate=30)
        s.width = s.height = size
        s.pix_fmt = "yuv420p"
        s.time_base = s.codec_context.time_base = fractions.Fraction(1, 1000)
        for i, p in enumerate(pts_ms):
            img = np.full((size, size, 3), (i * 9) % 255, np.uint8)
            frame = av.VideoFrame.from_ndarray(img, format="rgb24")
            frame.pts, frame.time_base = int(p), fractions.Fraction(1, 1000)
            for pkt in s.encode(frame):
                c.mux(pkt)
        for pkt in s.encode():
            c.mux(pkt)
    return path


def cfg() -> ExtractConfig:
    return ExtractConfig(preset="tiny", layers=[2], resolution=32, sampling=SAMPLING, batch_clips=8,
                         chunk_steps=16, device="cpu")


def test_vfr_video_gets_timestamp_times_and_cfr_keeps_the_formula(tmp_path, make_video):
    pts = list(range(0, 1000, 33)) + list(range(1000, 4000, 100))   # 1 s at 30 fps, 3 s at 10 fps
    write_vfr(tmp_path / "v" / "vfr.mp4", pts)
    make_video("v/cfr.mp4", seconds=2.0, fps=15, size=32)
    run_extract(cfg(), tmp_path / "v", tmp_path / "s.zarr", progress=False)
    reader = open_store(tmp_path / "s.zarr")
    vfr, cfr = reader.video_info("vfr"), reader.video_info("cfr")
    assert (vfr["timing"], cfr["timing"]) == ("pts", "fps")
    # truth: midpoint between a clip's first frame and the frame after it, in presentation time
    p = np.asarray(pts, dtype=np.float64) / 1000
    after = np.append(p[1:], p[-1] + 0.1)
    starts = SAMPLING.clip_starts(len(pts))
    truth = (p[starts] + after[starts + SAMPLING.span() - 1]) / 2
    np.testing.assert_allclose(reader.times("vfr"), truth, atol=2e-3)
    by_index = (starts + SAMPLING.span() / 2) / vfr["fps"]              # the old, wrong times
    assert np.abs(by_index - truth).max() > 0.5                          # the defect was real
    assert vfr["duration"] == pytest.approx(4.0, abs=0.01)
    np.testing.assert_array_equal(reader.times("cfr"), SAMPLING.centre_times(30, 15.0))


def test_one_frame_video_time_inside_its_duration(tmp_path, make_video):
    make_video("v/one.mp4", seconds=1 / 15, fps=15, size=32)
    run_extract(cfg(), tmp_path / "v", tmp_path / "s.zarr", progress=False)
    reader = open_store(tmp_path / "s.zarr")
    info = reader.video_info("one")
    (t,) = reader.times("one")
    assert info["num_frames"] == 1 and 0 < t < info["duration"]


def test_step_times_rules():
    starts = SAMPLING.clip_starts(40)
    even = np.arange(40) / 20.0
    got = step_times(starts, SAMPLING.span(), 40, 20.0, even)
    assert got.timing == "fps" and got.max_fps_error < 1e-9
    np.testing.assert_array_equal(got.times, SAMPLING.centre_times(40, 20.0))
    assert step_times(starts, SAMPLING.span(), 40, 20.0, None).timing == "fps"
    jitter = even + np.random.default_rng(0).uniform(-0.01, 0.01, 40) * (np.arange(40) > 0)
    assert step_times(starts, SAMPLING.span(), 40, 20.0, np.sort(jitter)).timing == "fps"
    slow = np.concatenate([even[:20], even[19] + np.arange(1, 21) * 0.2])
    assert step_times(starts, SAMPLING.span(), 40, 20.0, slow).timing == "pts"


def test_uneven_step_times_map_seconds_to_steps():
    times = np.array([0.1, 0.2, 0.3, 1.0, 2.0])
    geo = step_geometry(times)
    np.testing.assert_allclose(geo.to_steps(times), np.arange(5))
    np.testing.assert_allclose(geo.to_seconds(np.arange(5)), times)
    np.testing.assert_allclose(geo.to_steps(geo.to_seconds([0.5, 3.25, -1, 6])), [0.5, 3.25, -1, 6])
    affine = step_geometry((4 * np.arange(10) + 8) / 30.0)
    assert affine.times is None and affine.dt == pytest.approx(4 / 30)


def test_timestamps_of_a_constant_rate_file(make_video):
    path = make_video("c.mp4", seconds=1.0, fps=15, size=32)
    ts = frame_start_times(path, 15)
    np.testing.assert_allclose(ts, np.arange(15) / 15, atol=2e-3)
