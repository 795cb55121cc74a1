"""Fixed-length resampling against ActionFormer's ActivityNet loader (force_upsampling), from
tests/golden/actionformer_resample.npz (made by tests/golden/make_resample.py)."""
from pathlib import Path

import numpy as np
import pytest

from stages.data.dataset import step_geometry
from stages.data.resample import resample_features, resampled_geometry

GOLDEN = Path(__file__).resolve().parents[2] / "golden" / "actionformer_resample.npz"


@pytest.mark.parametrize("vid", ["vid_short", "vid_long", "vid_exact"])
def test_matches_actionformer(vid):
    g = np.load(GOLDEN)
    stride, nf, fps, n = g["meta"]
    x = g[f"{vid}/input"]
    ours = resample_features(x, int(n))
    np.testing.assert_allclose(ours, g[f"{vid}/resampled"], rtol=0, atol=1e-6)
    # our store records step centre times; ActionFormer derives the same grid from stride/num_frames
    times = (np.arange(len(x)) * stride + nf / 2) / fps
    geo = resampled_geometry(step_geometry(times), int(n))
    np.testing.assert_allclose(geo.to_steps(g[f"{vid}/seconds"]), g[f"{vid}/grid_segments"], atol=1e-4)
    assert geo.dt * fps == pytest.approx(float(g[f"{vid}/feat_stride"]))
