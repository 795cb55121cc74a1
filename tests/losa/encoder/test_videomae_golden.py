"""Golden parity: the project's backbone vs numbers computed by the official VideoMAEv2 code.

The fixture tests/golden/videomae_small.npz was made by tests/golden/make_videomae.py from the official
``models/modeling_finetune.py`` (random weights, 2 blocks, width 32, 4 frames) at 224 px and at 160 px
(official: model built for 160 px, fresh sin-cos table). Here the same weights go through the
official-checkpoint loader into ``VideoViT`` and every block output and the clip feature
``fc_norm(mean token)`` must agree within fp32 tolerance.
"""
from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
import torch

from losa.encoder.backbone import BackboneConfig, VideoViT
from losa.encoder.checkpoint import load_official_checkpoint

GOLDEN = Path(__file__).resolve().parents[2] / "golden" / "videomae_small.npz"
TOL = dict(rtol=1e-4, atol=1e-4)


@pytest.fixture(scope="module")
def golden() -> dict[str, np.ndarray]:
    with np.load(GOLDEN) as z:
        return {k: z[k] for k in z.files}


def _config(golden: dict) -> dict:
    return json.loads(golden["config"].tobytes().decode())


def _model(golden: dict, res: int, pos_table: str = "official") -> VideoViT:
    c = _config(golden)
    cfg = BackboneConfig("golden", patch_size=c["patch_size"], embed_dim=c["embed_dim"], depth=c["depth"],
                         num_heads=c["num_heads"], mlp_hidden=c["embed_dim"] * c["mlp_ratio"],
                         tubelet_size=c["tubelet_size"], num_frames=c["all_frames"], img_size=224)
    torch.manual_seed(0)
    model = VideoViT(cfg, num_frames=c["all_frames"], img_size=res, pos_table=pos_table).eval()
    sd = {k[3:]: torch.from_numpy(v.astype(np.float32)) for k, v in golden.items() if k.startswith("sd.")}
    assert load_official_checkpoint(model, {"model": sd}, require_fc_norm=True) is True
    return model


def _input(golden: dict, res: int) -> torch.Tensor:
    up = _config(golden)["upsample"]
    small = torch.from_numpy(golden[f"input_{res}"].astype(np.float32))
    return small.repeat_interleave(up, dim=3).repeat_interleave(up, dim=4)


@pytest.mark.parametrize("res", [224, 160])
def test_blocks_and_clip_feature_match_official(golden: dict, res: int) -> None:
    torch.set_num_threads(1)
    model = _model(golden, res)
    x = _input(golden, res)
    depth = _config(golden)["depth"]
    with torch.no_grad():
        outs = model.forward_layers(x, list(range(1, depth + 1)))
        feature = model.forward_features(x)
        pooled = model.pool_feature(outs[depth])
    for i in range(depth):
        ours = outs[i + 1].reshape(1, -1, model.embed_dim)
        torch.testing.assert_close(ours, torch.from_numpy(golden[f"block{i}_{res}"]), **TOL)
    ref = torch.from_numpy(golden[f"features_{res}"])
    torch.testing.assert_close(feature, ref, **TOL)
    torch.testing.assert_close(pooled, feature, rtol=0, atol=0)
    # the checkpoint's fc_norm is what made the feature: the default init would not
    assert not torch.allclose(torch.nn.functional.layer_norm(outs[depth].flatten(1, 3).mean(1), (32,),
                                                             eps=1e-6), ref, atol=1e-2)


@pytest.mark.parametrize("pos_table", ["trilinear", "bicubic"])
def test_recorded_alternatives_differ_from_official_at_160(golden: dict, pos_table: str) -> None:
    """The alternatives are real choices: at 160 px they do not give the official numbers."""
    torch.set_num_threads(1)
    model = _model(golden, 160, pos_table)
    with torch.no_grad():
        out = model.forward_layers(_input(golden, 160), [1])[1].reshape(1, -1, model.embed_dim)
    gap = (out - torch.from_numpy(golden["block0_160"])).abs().max().item()
    assert gap > 1e-2
