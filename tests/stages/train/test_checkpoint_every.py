"""Checkpoints every `checkpoint_every` epochs (default 5) and always after the last epoch."""
from __future__ import annotations

import pytest
import torch

import stages.train.run as train_mod
from stages.demo.synthetic_store import make_synthetic_store
from stages.train.run import train

pytestmark = pytest.mark.usefixtures("one_torch_thread")

MODEL = dict(mode="head-only", adapter_dim=8, adapter_heads=2, head=dict(embd_dim=16, fpn_dim=16, head_dim=16, n_heads=2, window=5, n_embd_layers=1,
                                         n_head_layers=1, n_levels=2, regression_ranges=[[0, 4], [4, 10000]]))


@pytest.fixture(scope="module")
def store(tmp_path_factory):
    return make_synthetic_store(tmp_path_factory.mktemp("c") / "f.zarr", num_videos=2, num_steps=32, channels=8,
                                layers=(2, 4), num_classes=2, seed=3)


def test_checkpoint_every_n_epochs_and_after_the_last(store, tmp_path, monkeypatch):
    saved = []
    real = train_mod.torch.save

    def spy(obj, path, *a, **k):
        if isinstance(obj, dict) and "epoch" in obj and "optimizer" in obj:
            saved.append(obj["epoch"])
        return real(obj, path, *a, **k)

    monkeypatch.setattr(train_mod.torch, "save", spy)
    cfg = dict(epochs=7, batch_size=2, warmup_epochs=0, max_seq_len=32, ema_decay=0.0)
    train(store.store, store.annotations, tmp_path / "a", MODEL, cfg, progress=False)  # default: every 5
    assert saved == [5, 7]
    assert torch.load(tmp_path / "a" / "checkpoint.pt", weights_only=True)["epoch"] == 7
    saved.clear()
    train(store.store, store.annotations, tmp_path / "b", MODEL, {**cfg, "epochs": 3, "checkpoint_every": 2},
          progress=False)
    assert saved == [2, 3]
