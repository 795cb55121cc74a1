"""base_feature="fc_norm": the head and the fusion base read the stored reference feature."""
from __future__ import annotations

import numpy as np
import pytest
import torch

from losa.model import LoSAConfig, TALModel
from stages.data.dataset import Collate, InferenceDataset
from stages.demo.synthetic_store import make_synthetic_store
from stages.errors import StageError
from stages.infer.predict import model_config_from_store, predict_store
from stages.train.run import train
from storage import ZarrActivationStore, open_store, write_video

pytestmark = pytest.mark.usefixtures("one_torch_thread")

HEAD = dict(embd_dim=16, fpn_dim=16, head_dim=16, n_heads=2, window=5, n_embd_layers=1, n_head_layers=1,
            path_drop=0.0)


@pytest.fixture(scope="module")
def stores(tmp_path_factory):
    """(plain synthetic store, the same store plus an ``fc_norm`` feature) and the annotations."""
    root = tmp_path_factory.mktemp("ref")
    data = make_synthetic_store(root / "plain.zarr", num_videos=4, num_steps=(40, 60), channels=16,
                                layers=(4, 8), cells=4, num_classes=2, seed=3, val_videos=1)
    plain = open_store(data.store)
    prov = {**plain.provenance, "reference_feature": {"name": "fc_norm", "definition": "test"}}
    with_ref = ZarrActivationStore.create_or_open(root / "ref.zarr", prov)
    rng = np.random.default_rng(0)
    for vid in plain.videos():
        arrays = plain.read(vid)
        feature = rng.standard_normal((plain.num_steps(vid), 16)).astype(np.float32)
        write_video(with_ref, vid, arrays, plain.times(vid), plain.video_info(vid), features={"fc_norm": feature})
    return data, open_store(root / "ref.zarr")


def test_model_base_is_the_reference_feature():
    cfg = LoSAConfig(mode="losa", tapped_layers=(4,), last_layer=8, channels=16, cells=1, num_classes=2,
                     adapter_dim=8, adapter_heads=2, base_feature="fc_norm", head=HEAD)
    assert cfg.required_layers == (4,) and cfg.required_features == ("fc_norm",)
    head_only = LoSAConfig(mode="head-only", last_layer=8, channels=16, num_classes=2, base_feature="fc_norm",
                           head=HEAD)
    assert head_only.required_layers == () and head_only.required_features == ("fc_norm",)
    assert LoSAConfig(mode="head-only", last_layer=8, channels=16, head=HEAD).required_features == ()
    torch.manual_seed(0)
    mask = torch.tensor([[True] * 6 + [False] * 2])
    feats = {4: torch.randn(1, 8, 1, 16), "fc_norm": torch.randn(1, 8, 1, 16)}
    for c in (cfg, head_only):            # zero gates: LoSA starts exactly at head-only on fc_norm
        out = TALModel(c).fuse(feats, mask)
        torch.testing.assert_close(out[0, :6], feats["fc_norm"][0, :6, 0])
        assert torch.count_nonzero(out[0, 6:]) == 0
    with pytest.raises(ValueError, match="lack the stored feature 'fc_norm'"):
        TALModel(cfg).fuse({4: feats[4], 8: feats[4]}, mask)


def test_dataset_reads_the_feature(stores):
    _, ref = stores
    vid = ref.videos()[0]
    for cache in (False, True):
        ds = InferenceDataset(ref, [vid], [], cache=cache, features=["fc_norm"])
        item = ds[0]
        assert list(item["feats"]) == ["fc_norm"]
        np.testing.assert_array_equal(item["feats"]["fc_norm"][:, 0].numpy(), ref.read_feature(vid, "fc_norm"))
    batch = Collate(8)([InferenceDataset(ref, [vid], [4], features=["fc_norm"])[0]])
    assert batch["feats"]["fc_norm"].shape[2:] == (1, 16) and batch["feats"][4].shape[2:] == (4, 16)


def test_train_and_predict_with_the_reference_base(stores, tmp_path):
    data, ref = stores
    with pytest.raises(StageError, match="holds no fc_norm feature; extract with reference_feature"):
        model_config_from_store(open_store(data.store), {"mode": "head-only", "base_feature": "fc_norm"}, 2)
    model = {"mode": "head-only", "base_feature": "fc_norm", "head": HEAD}
    result = train(ref, data.annotations, tmp_path / "run", model,
                   dict(epochs=1, batch_size=2, lr=1e-3, warmup_epochs=0, max_seq_len=32, ema_decay=0.0),
                   progress=False)
    assert result.model.cfg.base_feature == "fc_norm" and result.model.cfg.required_layers == ()
    dets = predict_store(tmp_path / "run", ref, ref.videos()[:2], device="cpu")
    assert set(dets["results"]) == set(ref.videos()[:2])
