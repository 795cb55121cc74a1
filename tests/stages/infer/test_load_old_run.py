"""Runs saved before ``short_mode`` / ``short_pool`` existed still load as they were trained (stages/infer/predict.py)."""

import torch

from losa.model import LoSAConfig, TALModel
from stages.infer.predict import load_run
from stages.rundir import write_model_file


def test_run_without_short_mode_loads_as_pooled(tmp_path) -> None:
    cfg = LoSAConfig(tapped_layers=(1,), last_layer=2, channels=16, cells=8, grid=2, t_sub=2, num_classes=2,
                     short_mode="pooled")
    model = TALModel(cfg)
    old_cfg = cfg.to_dict()
    del old_cfg["short_mode"]  # as written before the field existed
    write_model_file(tmp_path / "model.pt", model.state_dict(), {"model_cfg": old_cfg})
    loaded, _ = load_run(tmp_path)
    assert loaded.cfg.short_mode == "pooled"
    key = "short_adapters.layer_01.conv.weight"
    assert torch.equal(loaded.state_dict()[key], model.state_dict()[key])


def test_run_without_short_pool_loads_with_the_mean_query(tmp_path) -> None:
    cfg = LoSAConfig(tapped_layers=(1,), last_layer=2, channels=16, cells=8, grid=2, t_sub=2, num_classes=2,
                     short_pool="mean")
    model = TALModel(cfg)
    old_cfg = cfg.to_dict()
    del old_cfg["short_pool"]  # as written before the field existed (spacetime, mean query)
    write_model_file(tmp_path / "model.pt", model.state_dict(), {"model_cfg": old_cfg})
    loaded, _ = load_run(tmp_path)
    assert loaded.cfg.short_pool == "mean" and loaded.cfg.short_mode == "spacetime"
    assert not any(k.endswith("pool_weight") for k in loaded.state_dict())
