"""`fused_optimizer`: AdamW as one fused kernel per step, the same update as the per-parameter loop."""
from __future__ import annotations

import pytest
import torch

from stages.demo.synthetic_store import make_synthetic_store
from stages.train.run import train
from stages.train.schedule import fused_adamw

pytestmark = pytest.mark.usefixtures("one_torch_thread")

HEAD = dict(embd_dim=16, fpn_dim=16, head_dim=16, n_heads=2, window=5, n_embd_layers=1, n_head_layers=2,
            n_levels=2, regression_ranges=[[0, 4], [4, 10000]])


def test_fused_is_used_where_torch_has_it():
    assert fused_adamw(False, torch.device("cpu")) is False
    major, minor = (int(p) for p in torch.__version__.split(".")[:2])  # independent of TorchVersion
    assert fused_adamw(True, torch.device("cpu")) is ((major, minor) >= (2, 4))
    assert fused_adamw(True, torch.device("meta")) is False


def test_fused_and_loop_train_to_the_same_weights(tmp_path):
    data = make_synthetic_store(tmp_path / "f.zarr", num_videos=2, num_steps=32, channels=8, layers=(2, 4),
                                num_classes=2, seed=3)
    cfg = dict(epochs=3, batch_size=2, warmup_epochs=1, max_seq_len=32, ema_decay=0.0, lr=1e-2)
    model = dict(mode="losa", adapter_dim=8, adapter_heads=2, head=HEAD)
    weights, initial = {}, None
    for fused in (True, False):
        run = tmp_path / f"fused_{fused}"
        train(data.store, data.annotations, run, model, {**cfg, "fused_optimizer": fused}, progress=False)
        ckpt = torch.load(run / "checkpoint.pt", weights_only=True)
        weights[fused] = ckpt["model"]
        if initial is None:  # the same seed, one epoch: the weights have moved from where they start
            train(data.store, data.annotations, tmp_path / "e0", model, {**cfg, "epochs": 1}, progress=False)
            initial = torch.load(tmp_path / "e0" / "checkpoint.pt", weights_only=True)["model"]
        assert all(g.get("fused") in ((True,) if fused and fused_adamw(True, torch.device("cpu")) else (None, False))
                   for g in ckpt["optimizer"]["param_groups"])
    assert any(not torch.equal(w, initial[k]) for k, w in weights[True].items())
    for k, w in weights[True].items():
        torch.testing.assert_close(w, weights[False][k], rtol=1e-4, atol=1e-5, msg=k)
