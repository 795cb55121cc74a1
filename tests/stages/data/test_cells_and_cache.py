"""Training data path: the last layer is read as its cell mean, small stores stay in RAM by default."""
from __future__ import annotations

import numpy as np
import pytest
import torch

from losa.model import LoSAConfig, TALModel
from stages.data.annotations import load_annotations
from stages.data.dataset import Collate, InferenceDataset, StoreDataset, cache_bytes, resolve_cache
from stages.demo.synthetic_store import make_synthetic_store
from stages.errors import StageError
from stages.train.config import TrainConfig
from storage import open_store

pytestmark = pytest.mark.usefixtures("one_torch_thread")

LAYERS = (2, 3, 4)


@pytest.fixture(scope="module")
def store(tmp_path_factory):
    data = make_synthetic_store(tmp_path_factory.mktemp("s") / "s.zarr", num_videos=3, num_steps=40, channels=8,
                                layers=LAYERS, cells=4, num_classes=2, seed=1)
    return open_store(data.store), load_annotations(data.annotations)


class CountingReader:
    """Wraps a reader and counts `read` calls."""

    def __init__(self, reader):
        self._r, self.reads = reader, 0

    def read(self, *a, **k):
        self.reads += 1
        return self._r.read(*a, **k)

    def __getattr__(self, name):
        return getattr(self._r, name)


def test_mean_layers_are_read_as_their_cell_mean(store):
    reader, ann = store
    ds = StoreDataset(reader, ann, "training", [2, 3, 4], crop_ratio=None, mean_layers=[4], cache=False)
    item = ds[0]
    full = reader.read(item["video_id"], [2, 4])
    assert item["feats"][4].shape == (40, 1, 8)
    np.testing.assert_allclose(item["feats"][4].numpy(), full[4].mean(axis=1, keepdims=True), rtol=1e-6)
    assert item["feats"][2].shape == (40, 4, 8)  # tapped layers keep their cells
    np.testing.assert_array_equal(item["feats"][2].numpy(), full[2])
    inf = InferenceDataset(reader, reader.videos()[:1], [2, 4], mean_layers=[4])
    assert inf[0]["feats"][4].shape == (40, 1, 8) and inf[0]["feats"][2].shape == (40, 4, 8)


@pytest.mark.parametrize("mode", ["head-only", "losa", "side"])
def test_model_gives_the_same_output_from_the_cell_mean(store, mode):
    reader, ann = store
    cfg = LoSAConfig(mode=mode, tapped_layers=(2, 3), last_layer=4, channels=8, cells=4, grid=2, num_classes=2,
                     adapter_dim=8, input_norm="sequence",
                     head={"embd_dim": 16, "fpn_dim": 16, "head_dim": 16, "n_levels": 2, "window": 5,
                           "regression_ranges": [[0, 4], [4, 10000]]})
    assert cfg.mean_layers == (4,)
    torch.manual_seed(0)
    model = TALModel(cfg).eval()
    collate = Collate(model.head.strides[-1])
    full = collate([StoreDataset(reader, ann, "training", cfg.required_layers, crop_ratio=None)[0]])
    mean = collate([StoreDataset(reader, ann, "training", cfg.required_layers, crop_ratio=None,
                                 mean_layers=cfg.mean_layers)[0]])
    assert mean["feats"][4].shape[2] == 1
    with torch.no_grad():
        a, b = model(full["feats"], full["mask"]), model(mean["feats"], mean["mask"])
    for x, y in zip(a.cls_logits + a.offsets, b.cls_logits + b.offsets):
        torch.testing.assert_close(x, y, rtol=1e-5, atol=1e-5)
    if mode != "head-only":  # a tapped layer's cells cannot be replaced by their mean
        with pytest.raises(ValueError, match="layer 2"):
            model({**full["feats"], 2: full["feats"][2][:, :, :1]}, full["mask"])


def test_small_store_is_cached_by_default_and_read_once(store):
    reader, ann = store
    assert TrainConfig().cache_features == "auto" and TrainConfig().checkpoint_every == 5
    counting = CountingReader(reader)
    ds = StoreDataset(counting, ann, "training", [2, 4], mean_layers=[4], cache="auto")
    assert ds.cached
    for epoch in range(3):
        ds.set_epoch(epoch)
        for i in range(len(ds)):
            ds[i]
    assert counting.reads == len(ds)  # one whole-video read per video, then RAM
    # bytes the cache would hold: layer 2 with its 4 cells, layer 4 as one mean cell
    assert cache_bytes(reader, reader.videos(), [2, 4], [4]) == 3 * 40 * (4 + 1) * 8 * 4
    big = StoreDataset(counting, ann, "training", [2, 4], mean_layers=[4], cache="auto", cache_max_mb=0.001)
    assert not big.cached
    before = counting.reads
    big[0], big[0]
    assert counting.reads == before + 2


def test_resolve_cache_rejects_other_values(store):
    reader, _ = store
    assert resolve_cache(True, reader, [], [2]) is True and resolve_cache(False, reader, [], [2]) is False
    with pytest.raises(StageError, match="cache must be"):
        resolve_cache("sometimes", reader, [], [2])


def test_cache_features_knob_accepts_auto_and_booleans_from_text():
    from losa.schema import describe
    from pipeline.knobs import parse_text

    knob = next(k for k in describe(TrainConfig) if k.name == "cache_features")
    assert [parse_text(knob, t) for t in ("auto", "on", "off", "true", "False", "yes")] == \
        ["auto", True, False, True, False, True]
    with pytest.raises(ValueError, match="not one of"):
        parse_text(knob, "sometimes")


def test_extraction_stores_the_last_layers_cell_mean_and_training_reads_only_it(make_video, tmp_path):
    from losa.encoder.sampling import ClipSampling
    from stages.extract.config import ExtractConfig
    from stages.extract.run import run_extract

    make_video("v/a.mp4", seconds=1.5, size=40)
    cfg = ExtractConfig(preset="tiny", layers=[2], resolution=32, sampling=ClipSampling(4, 1, 2), grid=2,
                        batch_clips=4, device="cpu")
    run_extract(cfg, tmp_path / "v", tmp_path / "s.zarr", progress=False)
    reader = open_store(tmp_path / "s.zarr")
    assert reader.features() == ["cellmean_04"]
    cells = reader.read("a", [4])[4]
    assert cells.shape[1] == 4
    np.testing.assert_array_equal(reader.read_feature("a", "cellmean_04"), cells.mean(axis=1, dtype=np.float32))

    class Recording(CountingReader):
        def read(self, vid, layers=None, *a, **k):
            self.layers_read = list(layers or [])
            return super().read(vid, layers, *a, **k)

    rec = Recording(reader)
    ds = InferenceDataset(rec, ["a"], [2, 4], mean_layers=[4])
    item = ds[0]
    assert rec.layers_read == [2]  # layer 4's cells are not read: its stored mean is
    np.testing.assert_array_equal(item["feats"][4].numpy()[:, 0], cells.mean(axis=1, dtype=np.float32))
    assert item["feats"][2].shape[1] == 4
