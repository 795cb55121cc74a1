"""The VideoMAEv2 reference recipe end to end: squash-bilinear, /255, fp32, 16 frames every 4, and
the stored clip feature fc_norm(mean of all last-block tokens), exported as ActionFormer reads it."""
from __future__ import annotations

import json
import pickle

import decord
import numpy as np
import pytest
import torch
from click.testing import CliRunner

from losa.encoder.backbone import build_backbone
from losa.encoder.checkpoint import load_official_checkpoint, to_official_state_dict
from losa.encoder.sampling import ClipSampling
from pipeline.cli_extract import main as extract_main
from pipeline.cli_store import main as store_main
from stages.demo.videogen import moving_square_frames, write_mp4
from stages.extract.config import ExtractConfig
from stages.extract.run import run_extract
from storage import UnknownFeatureError, convert_store, export_npy, open_store

pytestmark = pytest.mark.usefixtures("one_torch_thread")

RES = 64
FRAMES = 40          # clip starts 0, 4, ..., 24: range(0, 40 - 15, 4) -> 7 clips


def _checkpoint(tmp_path, fc_norm: bool = True):
    model = build_backbone("tiny", 16, RES, seed=4)
    sd = to_official_state_dict(model)
    gen = torch.Generator().manual_seed(1)
    if fc_norm:
        sd["fc_norm.weight"] = 1 + 0.5 * torch.randn(96, generator=gen)
        sd["fc_norm.bias"] = 0.5 * torch.randn(96, generator=gen)
    else:
        sd = {k: v for k, v in sd.items() if not k.startswith("fc_norm.")}
    path = tmp_path / ("ft.pth" if fc_norm else "pt.pth")
    torch.save({"model": sd}, path)
    return path, sd


def _video(tmp_path):
    frames = moving_square_frames(FRAMES, size=96, seed=5)[:, :48]       # 96 wide, 48 high
    path = tmp_path / "videos" / "video_test_0000001.mp4"
    write_mp4(path, frames, fps=30)
    return path


def _reference_cfg(ckpt, **kw) -> ExtractConfig:
    base = dict(preset="tiny", checkpoint=ckpt, layers=[2], include_last=False,
                sampling=ClipSampling(16, 1, 4), resolution=RES, resize="squash-bilinear", norm="255",
                precision="fp32", reference_feature=True, batch_clips=3, chunk_steps=4, device="cpu")
    base.update(kw)
    return ExtractConfig(**base)


def _official_recipe(video, sd) -> np.ndarray:
    """The VideoMAEv2 TAD extractor's steps, written out: native decode, /255, bilinear squash,
    forward_features per clip of 16 consecutive frames, starts range(0, N - 15, 4)."""
    model = build_backbone("tiny", 16, RES, seed=0)
    load_official_checkpoint(model, sd, require_fc_norm=True)
    vr = decord.VideoReader(str(video), num_threads=1, ctx=decord.cpu(0))
    out = []
    for start in range(0, len(vr) - 15, 4):
        frames = torch.from_numpy(vr.get_batch(np.arange(start, start + 16)).asnumpy())
        x = frames.permute(3, 0, 1, 2).to(torch.float32) / 255                   # [3, 16, H, W]
        x = torch.nn.functional.interpolate(x, size=(RES, RES), mode="bilinear", align_corners=False)
        with torch.no_grad():
            out.append(model.forward_features(x.unsqueeze(0)).numpy())
    return np.vstack(out)


def test_reference_feature_equals_the_official_recipe_and_exports(tmp_path):
    ckpt, sd = _checkpoint(tmp_path)
    video = _video(tmp_path)
    store = tmp_path / "th14.zarr"
    summary = run_extract(_reference_cfg(ckpt), [video], store, progress=False)
    assert summary.done == 1
    reader = open_store(store)
    vid = "video_test_0000001"
    assert reader.layers() == [2] and reader.features() == ["fc_norm"]
    feature = reader.read_feature(vid, "fc_norm")
    expected = _official_recipe(video, sd)
    assert feature.shape == expected.shape == (7, 96) and feature.dtype == np.float32
    np.testing.assert_allclose(feature, expected, rtol=1e-5, atol=1e-5)
    np.testing.assert_allclose(reader.read_feature(vid, "fc_norm", 2, 5), expected[2:5], rtol=1e-5, atol=1e-5)
    prov = reader.provenance
    assert prov["reference_feature"]["name"] == "fc_norm" and "fc_norm(mean" in prov["reference_feature"]["definition"]
    assert (prov["resize"], prov["norm"], prov["pos_table"]) == ("squash-bilinear", "255", "official")
    assert reader.summary()["features"] == {"fc_norm": [96]}
    # npy export, the layout ActionFormer / OpenTAD read: one float32 [T, C] file per video
    index = export_npy(reader, tmp_path / "npy", None, feature="fc_norm")
    exported = np.load(tmp_path / "npy" / f"{vid}.npy")
    assert exported.dtype == np.float32 and np.array_equal(exported, feature)
    assert json.loads(index.read_text())[vid]["num_steps"] == 7
    res = CliRunner().invoke(store_main, ["export", str(store), "--format", "npy", "--feature", "fc_norm",
                                          "--out", str(tmp_path / "cli")])
    assert res.exit_code == 0, res.output
    assert np.array_equal(np.load(tmp_path / "cli" / f"{vid}.npy"), feature)
    info = CliRunner().invoke(store_main, ["info", str(store)])
    assert "reference    fc_norm" in info.output and "position table official" in info.output
    # the HDF5 copy keeps it
    h5 = open_store(convert_store(reader, tmp_path / "th14.h5"))
    assert h5.features() == ["fc_norm"] and np.array_equal(h5.read_feature(vid, "fc_norm"), feature)


def test_stores_without_the_feature_and_pretraining_checkpoints(tmp_path):
    video = _video(tmp_path)
    plain = tmp_path / "plain.zarr"
    run_extract(_reference_cfg(None, reference_feature=False), [video], plain, progress=False)
    reader = open_store(plain)
    assert reader.features() == [] and reader.provenance["reference_feature"] is None
    with pytest.raises(UnknownFeatureError, match="feature 'fc_norm' not stored for 1 video"):
        export_npy(reader, tmp_path / "x", None, feature="fc_norm")
    assert not (tmp_path / "x" / "video_test_0000001.npy").exists()
    ckpt, _ = _checkpoint(tmp_path, fc_norm=False)
    with pytest.raises(ValueError, match=rf"checkpoint {ckpt}: .*fc_norm\.weight.*needs a fine-tuned or distilled"):
        run_extract(_reference_cfg(ckpt), [video], tmp_path / "pt.zarr", progress=False)
    # without the reference feature a pre-training checkpoint is fine
    run_extract(_reference_cfg(ckpt, reference_feature=False), [video], tmp_path / "pt2.zarr", progress=False)


def _bad_files(tmp_path):
    text = tmp_path / "notes.pth"
    text.write_text("weights are on the shared drive\n")
    empty = tmp_path / "empty.pth"
    empty.touch()
    npickle = tmp_path / "arrays.pth"
    with open(npickle, "wb") as fh:
        pickle.dump({"blocks.0.norm1.weight": np.ones(96, dtype=np.float32)}, fh)
    npy = tmp_path / "arr.pth"
    with open(npy, "wb") as fh:
        np.save(fh, np.zeros(3))
    html = tmp_path / "page.pth"
    html.write_text("<!DOCTYPE html><html><body>Sign in</body></html>")
    return {text: "is a text file", empty: "is an empty file (0 bytes)",
            npickle: "is a pickle of NumPy objects", npy: "is a NumPy .npy array file",
            html: "is an HTML page (a failed download?)"}


def test_cli_checkpoint_that_is_not_a_checkpoint_says_what_it_is(tmp_path):
    video = _video(tmp_path)
    for i, (path, what) in enumerate(_bad_files(tmp_path).items()):
        res = CliRunner().invoke(extract_main, [str(video), "--store", str(tmp_path / f"s{i}.zarr"),
                                                "--preset", "tiny", "--resolution", "32", "--checkpoint",
                                                str(path), "--device", "cpu", "--no-progress"])
        assert res.exit_code == 2, res.output
        lines = [ln for ln in res.output.strip().splitlines() if ln.strip()]
        assert len(lines) == 1 and f"checkpoint {path} {what}" in lines[0], res.output
        assert "Traceback" not in res.output and not (tmp_path / f"s{i}.zarr").exists()
