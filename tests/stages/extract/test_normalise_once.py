"""Extraction input path: each frame converted once, the normalisation folded into the patch
embedding (exact up to float rounding), one cheap float16 range check."""
from __future__ import annotations

import numpy as np
import pytest
import torch

from losa.encoder.backbone import build_backbone
from losa.encoder.sampling import ClipSampling, input_affine, normalise
from stages.errors import StageError
from stages.extract.config import ExtractConfig
from stages.extract.decode import iter_clip_batches, iter_frame_batches
from stages.extract.run import ClipEncoder

pytestmark = pytest.mark.usefixtures("one_torch_thread")

SAMPLING = ClipSampling(4, 1, 2)


def _cfg(**kw) -> ExtractConfig:
    base = dict(preset="tiny", layers=[2], include_last=True, sampling=SAMPLING, resolution=32, batch_clips=3,
                device="cpu", precision="fp32")
    base.update(kw)
    return ExtractConfig(**base)


@pytest.mark.parametrize("mode", ["imagenet", "255"])
def test_folded_patch_embedding_equals_normalised_input(mode):
    frames = torch.randint(0, 256, (2, 4, 32, 32, 3), dtype=torch.uint8)
    plain = build_backbone("tiny", num_frames=4, img_size=32, seed=3)
    folded = build_backbone("tiny", num_frames=4, img_size=32, seed=3)
    folded.fold_input_affine(*input_affine(mode))
    with torch.no_grad():
        want = plain.forward_layers(normalise(frames, mode), [1, 4])
        got = folded.forward_layers(frames.movedim(-1, 1).float(), [1, 4])
    for layer in (1, 4):
        torch.testing.assert_close(got[layer], want[layer], rtol=1e-4, atol=1e-4)
    assert not torch.equal(plain.patch_embed.proj.weight, folded.patch_embed.proj.weight)


def test_normalise_is_scale_and_shift():
    x = torch.randint(0, 256, (3, 2, 2, 3), dtype=torch.uint8)
    scale, shift = input_affine("imagenet")
    y = normalise(x, "imagenet")
    c = 2
    torch.testing.assert_close(y[c], x[..., c].float() * scale[c] + shift[c])
    assert y.is_contiguous()


def test_encode_frames_with_index_matches_the_unfolded_recipe(make_video):
    cfg = _cfg(norm="imagenet")
    enc = ClipEncoder(cfg)
    assert enc.folded
    rng = np.random.default_rng(0)
    index = np.arange(3)[:, None] * 2 + np.arange(4)[None, :]          # 3 overlapping clips
    frames = rng.integers(0, 256, size=(int(index.max()) + 1, 32, 32, 3), dtype=np.uint8)
    got = enc.encode(frames, index)
    again = enc(frames[index])                                           # same path, gathered first
    for layer in got:
        np.testing.assert_array_equal(got[layer], again[layer])
    plain = build_backbone("tiny", num_frames=4, img_size=32, seed=cfg.seed).eval()
    with torch.no_grad():
        ref = plain.forward_layers(normalise(torch.from_numpy(frames[index]), "imagenet"), cfg.all_layers)
    from losa.encoder.tokens import pool_tokens

    for layer, t in ref.items():
        want = pool_tokens(t, cfg.grid, cfg.temporal).numpy()
        np.testing.assert_allclose(got[layer].astype(np.float32), want, rtol=2e-3, atol=2e-3)  # float16 store


def test_frame_batches_hold_each_frame_once_and_gather_to_the_clips(make_video):
    path = make_video("v.mp4", seconds=2.0, fps=15, size=40)
    args = (path, SAMPLING, 32, "short-crop", 4)
    clip_batches = list(iter_clip_batches(*args))
    frame_batches = list(iter_frame_batches(*args))
    assert [s for s, _ in clip_batches] == [s for s, _, _ in frame_batches]
    for (_, clips), (_, frames, index) in zip(clip_batches, frame_batches):
        np.testing.assert_array_equal(frames[index], clips)
        n = len(index)
        assert len(frames) == (n - 1) * SAMPLING.clip_stride + SAMPLING.span() < n * SAMPLING.frames_per_clip


def test_float16_range_check_is_kept():
    enc = ClipEncoder(_cfg())
    ok = torch.tensor([[[65519.0, -3.0]]])
    assert enc._to_store_dtype(ok, 4).dtype == np.float16
    with pytest.raises(StageError, match="overflow float16"):
        enc._to_store_dtype(torch.tensor([[[70000.0, 1.0]]]), 4)
    nan = enc._to_store_dtype(torch.tensor([[[float("nan"), 1.0]]]), 4)  # NaN passes through, as before
    assert np.isnan(nan[0, 0, 0])
