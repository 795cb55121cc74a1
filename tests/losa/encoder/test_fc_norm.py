"""fc_norm: loaded from fine-tuned checkpoints, optional for pre-training ones, used by the clip feature."""
from __future__ import annotations

import pytest
import torch

from losa.encoder.backbone import build_backbone
from losa.encoder.checkpoint import (
    CheckpointError,
    convert_official_state_dict,
    load_official_checkpoint,
    to_official_state_dict,
)


def _with_fc_norm(seed: int = 3) -> dict[str, torch.Tensor]:
    sd = to_official_state_dict(build_backbone("tiny", 8, 64, seed=seed))
    gen = torch.Generator().manual_seed(seed)
    sd["fc_norm.weight"] = 1 + 0.3 * torch.randn(96, generator=gen)
    sd["fc_norm.bias"] = 0.3 * torch.randn(96, generator=gen)
    return sd


def test_fc_norm_is_loaded_and_exported() -> None:
    sd = _with_fc_norm()
    model = build_backbone("tiny", 8, 64, seed=9)
    assert torch.equal(model.fc_norm.weight, torch.ones(96)) and model.fc_norm.eps == 1e-6
    assert load_official_checkpoint(model, {"model": {**sd, "head.weight": torch.zeros(4, 96)}}) is True
    assert torch.equal(model.fc_norm.weight, sd["fc_norm.weight"])
    assert torch.equal(to_official_state_dict(model)["fc_norm.bias"], sd["fc_norm.bias"])


def test_clip_feature_is_fc_norm_of_the_mean_token() -> None:
    model = build_backbone("tiny", 8, 64, seed=1)
    load_official_checkpoint(model, _with_fc_norm())
    x = torch.randn(2, 3, 8, 64, 64, generator=torch.Generator().manual_seed(0))
    with torch.no_grad():
        last = model(x)
        feature = model.forward_features(x)
    mean = last.reshape(2, -1, 96).mean(1)
    ref = torch.nn.functional.layer_norm(mean, (96,), model.fc_norm.weight, model.fc_norm.bias, 1e-6)
    torch.testing.assert_close(feature, ref)
    assert feature.shape == (2, 96) and feature.dtype == torch.float32
    with pytest.raises(ValueError, match=r"expected last-block tokens"):
        model.pool_feature(last.reshape(2, -1, 96))


def test_pretraining_checkpoint_without_fc_norm() -> None:
    sd = {k: v for k, v in _with_fc_norm().items() if not k.startswith("fc_norm.")}
    pretrain = {"model": {**{"encoder." + k: v for k, v in sd.items()}, "encoder.norm.weight": torch.ones(96),
                          "mask_token": torch.zeros(1, 1, 8)}}
    model = build_backbone("tiny", 8, 64, seed=9)
    assert load_official_checkpoint(model, pretrain) is False          # blocks loaded, fc_norm kept
    assert torch.equal(model.blocks[0].norm1.weight, sd["blocks.0.norm1.weight"])
    assert torch.equal(model.fc_norm.weight, torch.ones(96))
    with pytest.raises(CheckpointError, match=r"2 missing keys: fc_norm\.weight, fc_norm\.bias; the clip "
                                              r"feature .* needs a fine-tuned or distilled checkpoint"):
        convert_official_state_dict(pretrain, model, require_fc_norm=True)
    half = {**sd, "fc_norm.weight": torch.ones(96)}                     # one of the pair: an error
    with pytest.raises(CheckpointError, match=r"1 missing key: fc_norm\.bias"):
        convert_official_state_dict(half, model)
