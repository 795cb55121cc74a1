"""Fixed-length resampling (ActivityNet protocol): features, step times, segments, class-agnostic."""
from __future__ import annotations

from types import SimpleNamespace

import numpy as np
import pytest

from stages.data.dataset import InferenceDataset, StepGeometry, StoreDataset, step_geometry
from stages.data.resample import resample_features, resampled_geometry


class TimeReader:
    """Fake store whose feature at each step is that step's centre time (so features carry time)."""

    def __init__(self, lengths, t0=0.5, dt=0.25):
        self._times = {v: t0 + dt * np.arange(n) for v, n in lengths.items()}

    def videos(self):
        return sorted(self._times)

    def layers(self):
        return [4]

    def video_info(self, vid):
        return {"duration": float(self._times[vid][-1] + 0.5)}

    def times(self, vid):
        return self._times[vid]

    def read(self, vid, layers=None, t0=0, t1=None):
        t = self._times[vid].astype(np.float32)
        return {4: np.broadcast_to(t[:, None, None], (len(t), 1, 2))[t0:t1].copy()}


def test_linear_interpolation_hand_worked():
    x = np.arange(4, dtype=np.float32)[:, None]
    # up: x_i = (i + 0.5) * 4/8 - 0.5, clamped to [0, 3]
    np.testing.assert_allclose(resample_features(x, 8)[:, 0],
                               [0, 0.25, 0.75, 1.25, 1.75, 2.25, 2.75, 3])
    # down: x_i = (i + 0.5) * 8/4 - 0.5
    np.testing.assert_allclose(resample_features(np.arange(8.0)[:, None, None], 4)[:, 0, 0],
                               [0.5, 2.5, 4.5, 6.5])
    np.testing.assert_array_equal(resample_features(x, 4), x)   # already N steps: unchanged


def test_geometry_matches_actionformer_when_clips_tile_the_video():
    # ActionFormer ANet (force_upsampling): feat_stride' = ((T-1)*stride + num_frames)/N frames,
    # offset 0.5 → grid = sec * fps / feat_stride' - 0.5. Our store: times = (j*stride + nf/2)/fps.
    fps, stride, nf, T, N = 15.0, 16, 16, 37, 192
    geo = step_geometry((np.arange(T) * stride + nf / 2) / fps)
    new = resampled_geometry(geo, N)
    feat_stride = ((T - 1) * stride + nf) / N
    sec = np.array([0.0, 3.3, 20.1, 39.4])
    np.testing.assert_allclose(new.to_steps(sec), sec * fps / feat_stride - 0.5, atol=1e-9)
    np.testing.assert_allclose(new.to_seconds(new.to_steps(sec)), sec, atol=1e-9)
    assert new.num_steps == N


def test_features_and_times_stay_consistent():
    reader = TimeReader({"v": 10})
    ds = InferenceDataset(reader, ["v"], [4], resample_steps=32)
    item, geo = ds[0], ds.geometries[0]
    assert item["num_steps"] == 32 and item["feats"][4].shape == (32, 1, 2)
    feat_time = item["feats"][4][:, 0, 0].numpy()
    interior = slice(2, 30)   # the two ends are clamped by the interpolation
    np.testing.assert_allclose(feat_time[interior], geo.to_seconds(np.arange(32))[interior], atol=1e-5)
    # downsampling: every output step is interior
    ds = InferenceDataset(reader, ["v"], [4], resample_steps=4)
    np.testing.assert_allclose(ds[0]["feats"][4][:, 0, 0].numpy(),
                               ds.geometries[0].to_seconds(np.arange(4)), atol=1e-5)


def test_training_segments_and_class_agnostic_labels():
    reader = TimeReader({"a": 20, "b": 7})
    ann = SimpleNamespace(classes=["jump", "run"], videos={
        "a": {"subset": "training", "duration": None, "segments": [(1.0, 2.0, "run"), (1.5, 3.0, "jump")]},
        "b": {"subset": "training", "duration": None, "segments": [(0.5, 1.5, "run")]}})
    ds = StoreDataset(reader, ann, "training", [4], max_seq_len=16, crop_ratio=None, training=True,
                      resample_steps=16, class_agnostic=True)
    assert ds.classes == ["action"] and ds.lengths == [16, 16]
    for k, vid in enumerate(["a", "b"]):
        item = ds[k]
        geo = resampled_geometry(step_geometry(reader.times(vid)), 16)
        assert item["num_steps"] == 16 and item["start"] == 0
        want = [geo.to_steps([s, e]) for s, e, _ in ann.videos[vid]["segments"]]
        np.testing.assert_allclose(item["segments"].numpy(), np.asarray(want), rtol=1e-5)
        assert item["labels"].tolist() == [0] * len(want)
    per_class = StoreDataset(reader, ann, "training", [4], max_seq_len=16, crop_ratio=None,
                             resample_steps=16)
    assert per_class.classes == ["jump", "run"] and per_class[0]["labels"].tolist() == [1, 0]


def test_bad_length():
    with pytest.raises(ValueError, match="resample_steps"):
        resampled_geometry(StepGeometry(0.0, 1.0, 4), 0)
