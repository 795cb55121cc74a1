"""`adapter_lr_scale`: adapters and fusion train at a multiple of the head's learning rate."""
from __future__ import annotations

import pytest
import torch

from stages.demo.synthetic_store import make_synthetic_store
from stages.train.config import TrainConfig, TrainConfigError
from stages.train.run import train

pytestmark = pytest.mark.usefixtures("one_torch_thread")

HEAD = dict(embd_dim=16, fpn_dim=16, head_dim=16, n_heads=2, window=5, n_embd_layers=1, n_head_layers=1,
            n_levels=2, regression_ranges=[[0, 4], [4, 10000]])
MODEL = dict(mode="losa", adapter_dim=8, adapter_heads=2, head=HEAD)


@pytest.fixture(scope="module")
def store(tmp_path_factory):
    return make_synthetic_store(tmp_path_factory.mktemp("lr") / "f.zarr", num_videos=2, num_steps=32, channels=8,
                                layers=(2, 4), num_classes=2, seed=3)


def _group_lrs(run) -> list[float]:
    ckpt = torch.load(run / "checkpoint.pt", weights_only=True)
    return [g["lr"] for g in ckpt["optimizer"]["param_groups"]]


def test_adapter_groups_follow_the_schedule_at_their_scale(store, tmp_path):
    # constant schedule after a 0-epoch warm-up: the last lr of every group is its base lr
    cfg = dict(epochs=2, batch_size=2, warmup_epochs=0, max_seq_len=32, ema_decay=0.0, lr=1e-3,
               schedule="constant")
    train(store.store, store.annotations, tmp_path / "x4", MODEL, {**cfg, "adapter_lr_scale": 4.0}, progress=False)
    assert _group_lrs(tmp_path / "x4") == pytest.approx([1e-3, 1e-3, 4e-3, 4e-3])
    train(store.store, store.annotations, tmp_path / "x1", MODEL, cfg, progress=False)  # default 1: two groups
    assert _group_lrs(tmp_path / "x1") == pytest.approx([1e-3, 1e-3])


def test_scale_must_be_positive():
    with pytest.raises(TrainConfigError, match="adapter_lr_scale"):
        TrainConfig(adapter_lr_scale=0)
