"""Tests for clip sampling arithmetic and pixel normalisation."""
from __future__ import annotations

import numpy as np
import pytest
import torch

from losa.encoder.sampling import IMAGENET_MEAN, IMAGENET_STD, ClipSampling, normalise


def test_defaults_and_span() -> None:
    s = ClipSampling()
    assert (s.frames_per_clip, s.frame_step, s.clip_stride) == (16, 1, 4)
    assert s.span() == 16
    assert ClipSampling(16, 2, 8).span() == 31
    assert ClipSampling.from_dict(ClipSampling(8, 3, 5).to_dict()) == ClipSampling(8, 3, 5)


def test_clip_starts_and_count() -> None:
    s = ClipSampling()
    # ActionFormer #5: (N - 16) // 4 + 1 feature vectors for N frames
    for n in (16, 17, 19, 20, 100, 5094):
        starts = s.clip_starts(n)
        assert len(starts) == s.num_clips(n) == (n - 16) // 4 + 1
        assert starts[0] == 0 and np.all(np.diff(starts) == 4)
        assert starts[-1] + s.span() <= n < starts[-1] + s.span() + 4
    assert s.clip_starts(5094).dtype == np.int64


def test_frame_indices_with_step() -> None:
    s = ClipSampling(frames_per_clip=4, frame_step=2, clip_stride=3)
    idx = s.frame_indices(12)                      # span 7: starts 0, 3
    np.testing.assert_array_equal(idx, [[0, 2, 4, 6], [3, 5, 7, 9]])
    assert idx.shape == (s.num_clips(12), 4)


def test_short_video_gives_one_clamped_clip() -> None:
    s = ClipSampling()
    idx = s.frame_indices(5)
    assert idx.shape == (1, 16)
    np.testing.assert_array_equal(idx[0], [0, 1, 2, 3, 4] + [4] * 11)
    np.testing.assert_array_equal(s.frame_indices(1), np.zeros((1, 16), dtype=np.int64))
    assert s.num_clips(15) == 1


def test_centre_times_actionformer_convention() -> None:
    s = ClipSampling()
    fps = 30.0
    times = s.centre_times(100, fps)
    i = np.arange(s.num_clips(100))
    np.testing.assert_allclose(times, (4 * i + 8) / fps)
    # general formula, frame_step 2: span 31 → centre at start + 15 + 0.5 frames
    t2 = ClipSampling(16, 2, 8).centre_times(200, 25.0)
    np.testing.assert_allclose(t2, (8 * np.arange(len(t2)) + 15 + 0.5) / 25.0)
    assert t2.dtype == np.float64


@pytest.mark.parametrize("kwargs", [{"frames_per_clip": 0}, {"frame_step": -1}, {"clip_stride": 1.5}])
def test_invalid_sampling(kwargs: dict) -> None:
    with pytest.raises(ValueError, match=next(iter(kwargs))):
        ClipSampling(**kwargs)


def test_invalid_video_and_fps() -> None:
    s = ClipSampling()
    with pytest.raises(ValueError, match="at least one frame"):
        s.clip_starts(0)
    with pytest.raises(ValueError, match="fps"):
        s.centre_times(100, 0.0)
    with pytest.raises(ValueError, match="unknown clip sampling key"):
        ClipSampling.from_dict({"frames": 16})


def test_normalise_layout_and_values() -> None:
    x = torch.randint(0, 256, (2, 4, 5, 6, 3), dtype=torch.uint8)
    y = normalise(x, "255")
    assert y.shape == (2, 3, 4, 5, 6) and y.dtype == torch.float32
    torch.testing.assert_close(y[1, 2, 3, 4, 5], x[1, 3, 4, 5, 2].float() / 255)
    z = normalise(x, "imagenet")
    c = 1
    expected = (x[0, 2, 1, 3, c].float() / 255 - IMAGENET_MEAN[c]) / IMAGENET_STD[c]
    torch.testing.assert_close(z[0, c, 2, 1, 3], expected)
    assert normalise(x, "255", dtype=torch.bfloat16).dtype == torch.bfloat16
    assert normalise(x[0], "255").shape == (3, 4, 5, 6)


def test_normalise_errors() -> None:
    x = torch.zeros(1, 2, 4, 4, 3, dtype=torch.uint8)
    with pytest.raises(ValueError, match="mode 'clip'"):
        normalise(x, "clip")
    with pytest.raises(ValueError, match="uint8"):
        normalise(x.float(), "255")
    with pytest.raises(ValueError, match="shape"):
        normalise(torch.zeros(1, 2, 4, 4, 4, dtype=torch.uint8), "255")
