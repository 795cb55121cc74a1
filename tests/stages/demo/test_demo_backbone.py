"""The demo backbone's pre-training stage (`stages.demo.backbone`, `losa-demo-backbone`)."""
from __future__ import annotations

import json

import numpy as np
import pytest
import torch
from click.testing import CliRunner

from losa.encoder.backbone import build_backbone
from losa.encoder.checkpoint import load_official_checkpoint
from pipeline.cli_demo_backbone import main as backbone_main
from stages.demo.backbone import BACKGROUND, _augment, _label_map, clip_labels, pretrain_backbone
from stages.demo.backbone_config import BackboneTrainSettings, parse_merge
from stages.demo.data import generate_demo
from stages.errors import StageError
from stages.extract.weights import load_checkpoint

pytestmark = pytest.mark.usefixtures("one_torch_thread")


def test_clip_labels_cover_rule():
    # 15 fps; an action over frames [30, 60): clips of 16 frames every 2 frames
    rows = dict(clip_labels(90, 15.0, [(2.0, 4.0, "pulse")], 16, {"pulse": "pulse"}, 0.75))
    assert rows[0] == BACKGROUND and rows[14] == BACKGROUND      # [14, 30) does not touch it
    assert 16 not in rows                                         # [16, 32): 2/16 covered, left out
    assert rows[26] == "pulse"                                    # [26, 42): 12/16 = 0.75
    assert 24 not in rows and rows[48] == "pulse" and 50 not in rows    # [48, 64): 12/16; [50, 66): 10/16
    assert rows[60] == BACKGROUND


def test_merge_groups_and_errors():
    assert parse_merge("a+b, c+d") == [["a", "b"], ["c", "d"]] and parse_merge("") == []
    with pytest.raises(StageError, match="at least two"):
        parse_merge("a")
    with pytest.raises(StageError, match="more than one group"):
        parse_merge("a+b,b+c")
    label_of, labels = _label_map(["move_left", "move_right", "spin"], "move_left+move_right")
    assert label_of["move_left"] == label_of["move_right"] == "move_left+move_right"
    assert labels == [BACKGROUND, "move_left+move_right", "spin"]
    with pytest.raises(StageError, match="'jump' is not in the annotations"):
        _label_map(["move_left", "spin"], "move_left+jump")


def test_augment_keeps_shape_and_mirrors():
    clip = np.random.default_rng(0).integers(0, 255, size=(4, 16, 16, 3), dtype=np.uint8)
    rng = np.random.default_rng(1)
    outs = [_augment(clip, rng, flip=True) for _ in range(20)]
    assert all(o.shape == clip.shape and o.dtype == np.uint8 for o in outs)
    assert any(not np.array_equal(o, clip) for o in outs)
    # a clip whose frames are constant images 0, 1, 2, 3: flips=False never reverses time
    ramp = np.broadcast_to(np.arange(4, dtype=np.uint8)[:, None, None, None], (4, 16, 16, 3)).copy()
    for seed in range(10):
        kept = _augment(ramp, np.random.default_rng(seed), flip=False)
        assert kept[:, 0, 0, 0].tolist() == [0, 1, 2, 3]
    assert any(_augment(ramp, np.random.default_rng(s), flip=True)[0, 0, 0, 0] == 3 for s in range(10))


@pytest.fixture(scope="module")
def tiny_demo(tmp_path_factory):
    out = tmp_path_factory.mktemp("demo")
    generate_demo(out, num_videos=4, seed=3, size=32, min_len=10, max_len=12, test_fraction=0.5)
    return out


def test_flip_needs_merged_mirror_pair(tiny_demo, tmp_path):
    cfg = BackboneTrainSettings(out=tmp_path / "b.pth", merge="", resolution=32, frames=4, steps=1)
    with pytest.raises(StageError, match="move_left and move_right are separate"):
        pretrain_backbone(tiny_demo / "videos", tiny_demo / "annotations.json", cfg)
    assert not (tmp_path / "b.pth").exists()


def test_pretrain_writes_official_checkpoint_that_extraction_loads(tiny_demo, tmp_path):
    out, metrics = tmp_path / "m" / "backbone.pth", tmp_path / "m" / "backbone.json"
    res = CliRunner().invoke(backbone_main, [
        "--videos", str(tiny_demo / "videos"), "--annotations", str(tiny_demo / "annotations.json"),
        "--out", str(out), "--metrics", str(metrics), "--resolution", "32", "--frames", "4",
        "--steps", "12", "--batch-clips", "4", "--eval-clips", "8", "--lr", "3e-3", "--threads", "1",
        "--no-progress"], catch_exceptions=False)
    assert res.exit_code == 0, res.output
    sd = load_checkpoint(out)
    assert set(sd) == {"model"}
    keys = set(sd["model"])
    assert {"patch_embed.proj.weight", "blocks.0.attn.q_bias", "blocks.0.attn.v_bias", "fc_norm.weight",
            "head.weight", "head.bias"} <= keys
    assert not any(k.endswith("qkv.bias") for k in keys)
    fresh = build_backbone("tiny", 4, 32, seed=0)
    before = fresh.blocks[0].mlp.fc1.weight.clone()
    assert load_official_checkpoint(fresh, sd["model"], require_fc_norm=True)
    assert not torch.equal(before, fresh.blocks[0].mlp.fc1.weight)          # trained weights arrived
    report = json.loads(metrics.read_text())
    assert report["labels"][0] == BACKGROUND and "move_left+move_right" in report["labels"]
    assert report["curve"][-1]["step"] == 12 and 0.0 <= report["eval_clip_accuracy"] <= 1.0
    assert all(np.isfinite(r["loss"]) for r in report["curve"])


def test_missing_video_named(tiny_demo, tmp_path):
    videos = tmp_path / "videos"
    videos.mkdir()
    cfg = BackboneTrainSettings(out=tmp_path / "b.pth", resolution=32, frames=4, steps=1)
    with pytest.raises(StageError, match=r"video 'demo_00\d' of subset 'training' not found"):
        pretrain_backbone(videos, tiny_demo / "annotations.json", cfg)


def test_same_settings_write_the_same_bytes(tiny_demo, tmp_path):
    """DVC hashes the checkpoint: a re-run with the same settings must not invalidate extraction."""
    paths = []
    for name in ("a", "b"):
        cfg = BackboneTrainSettings(out=tmp_path / name / "backbone.pth", resolution=32, frames=4, steps=3,
                                    batch_clips=4, eval_clips=0)
        paths.append(pretrain_backbone(tiny_demo / "videos", tiny_demo / "annotations.json", cfg).out)
    assert paths[0].read_bytes() == paths[1].read_bytes()
