"""Dataset tests: seconds↔steps mapping, ActionFormer-style truncation, collate padding/masks."""
from __future__ import annotations

from types import SimpleNamespace

import numpy as np
import pytest
import torch

from stages.data.dataset import (
    Collate,
    InferenceDataset,
    MissingVideosError,
    StoreDataset,
    length_sorted_batches,
    padded_length,
    step_geometry,
    truncate_window,
)


class FakeReader:
    """In-memory stand-in for an ActivationReader (same read API, records every read)."""

    def __init__(self, lengths: dict[str, int], layers=(4, 8), cells=1, channels=3, t0=0.5, dt=0.25):
        self.data = {}
        self.reads: list[tuple[str, int, int | None]] = []
        self._times = {}
        for i, (vid, n) in enumerate(sorted(lengths.items())):
            steps = np.arange(n, dtype=np.float32)
            self.data[vid] = {
                layer: np.broadcast_to((steps + 1000 * i + layer)[:, None, None], (n, cells, channels)).copy()
                for layer in layers
            }
            self._times[vid] = t0 + dt * np.arange(n)
        self._layers = list(layers)

    def videos(self):
        return sorted(self.data)

    def layers(self):
        return self._layers

    def video_info(self, vid):
        return {"duration": float(self._times[vid][-1] + 1.0), "num_steps": len(self._times[vid])}

    def times(self, vid):
        return self._times[vid]

    def read(self, vid, layers=None, t0=0, t1=None):
        self.reads.append((vid, t0, t1))
        return {k: self.data[vid][k][t0:t1] for k in (layers or self._layers)}


def make_ann(videos: dict[str, tuple[str, list]], classes=("jump", "run")):
    return SimpleNamespace(
        classes=list(classes),
        videos={
            vid: {"subset": subset, "duration": None, "fps": 30.0, "segments": segs}
            for vid, (subset, segs) in videos.items()
        },
    )


def test_step_geometry_round_trip():
    geo = step_geometry(0.5 + 0.25 * np.arange(10), "v")
    assert geo.t0 == 0.5 and geo.dt == pytest.approx(0.25) and geo.num_steps == 10
    np.testing.assert_allclose(geo.to_steps([0.5, 1.0, 2.75]), [0.0, 2.0, 9.0])
    np.testing.assert_allclose(geo.to_seconds(geo.to_steps([1.3, 2.2])), [1.3, 2.2])
    with pytest.raises(ValueError, match="'bad'"):
        step_geometry(np.array([0.0, 1.0, 1.0]), "bad")


def test_annotations_mapped_to_step_coordinates():
    reader = FakeReader({"a": 40})
    ann = make_ann({"a": ("train", [(1.5, 3.0, "run"), (0.5, 0.75, 0)])})
    ds = StoreDataset(reader, ann, "train", [4, 8], training=False)
    item = ds[0]
    # (s - 0.5) / 0.25: 1.5 s → step 4, 3.0 s → step 10; label "run" → 1; integer label kept
    np.testing.assert_allclose(item["segments"].numpy(), [[4.0, 10.0], [0.0, 1.0]])
    assert item["labels"].tolist() == [1, 0]
    assert item["feats"][8].shape == (40, 1, 3)
    assert float(item["feats"][8][7, 0, 0]) == 7 + 8  # step 7 of layer 8


def test_missing_videos_error_and_allow_missing():
    reader = FakeReader({"a": 20})
    ann = make_ann({"a": ("train", [(1, 2, "run")]), "gone": ("train", [(1, 2, "run")])})
    with pytest.raises(MissingVideosError, match="gone"):
        StoreDataset(reader, ann, "train", [4], training=False)
    with pytest.warns(UserWarning, match="gone"):
        ds = StoreDataset(reader, ann, "train", [4], training=False, allow_missing=True)
    assert [r.video_id for r in ds.records] == ["a"]


def test_unknown_layer_and_label_errors():
    reader = FakeReader({"a": 20})
    with pytest.raises(ValueError, match=r"\[12\]"):
        StoreDataset(reader, make_ann({"a": ("train", [(1, 2, "run")])}), "train", [4, 12])
    with pytest.raises(ValueError, match="'swim'"):
        StoreDataset(reader, make_ann({"a": ("train", [(1, 2, "swim")])}), "train", [4])


def test_truncate_keeps_only_actions_mostly_inside():
    rng = np.random.default_rng(0)
    segs = np.array([[10.0, 20.0], [95.0, 115.0], [300.0, 310.0]], dtype=np.float32)
    labels = np.array([0, 1, 1])
    for _ in range(200):
        st, ed, out, lab = truncate_window(segs, labels, 400, 100, 0.5, rng)
        assert ed - st == 100 and 0 <= st <= 300
        assert len(out) >= 1  # always retried until an action is inside
        lo, hi = st - 0.5, ed - 0.5
        for (s, e), lab_true in zip(segs, labels):
            frac = max(0.0, min(e, hi) - max(s, lo)) / (e - s)
            expected = frac >= 0.5
            clipped = np.array([max(s, lo), min(e, hi)]) - st
            match = [ol for o, ol in zip(out, lab) if np.allclose(o, clipped) and ol == lab_true]
            assert bool(match) == expected, (st, s, e, frac)
        assert len(out) == len(lab) <= len(segs)
        assert np.all(out[:, 0] >= -0.5) and np.all(out[:, 1] <= 100 - 0.5)


def test_truncate_short_video_whole_or_cropped():
    segs = np.array([[2.0, 8.0]], dtype=np.float32)
    rng = np.random.default_rng(1)
    st, ed, out, _ = truncate_window(segs, np.array([0]), 50, 100, 0.5, rng, crop_ratio=None)
    assert (st, ed) == (0, 50) and np.array_equal(out, segs)
    lengths = {truncate_window(segs, np.array([0]), 50, 100, 0.5, rng, crop_ratio=(0.8, 1.0))[1:2][0]
               - 0 for _ in range(50)}
    assert len(lengths) > 1


def test_training_windows_reproducible_per_epoch_and_read_lazily():
    reader = FakeReader({"a": 300})
    ann = make_ann({"a": ("train", [(5.0, 8.0, "run"), (40.0, 50.0, "jump")])})
    ds = StoreDataset(reader, ann, "train", [4], max_seq_len=64, seed=3)
    a0, a0_again = ds[0], ds[0]
    assert a0["start"] == a0_again["start"]
    starts = set()
    for epoch in range(10):
        ds.set_epoch(epoch)
        item = ds[0]
        starts.add(item["start"])
        assert item["num_steps"] == 64 and item["feats"][4].shape[0] == 64
        # the store was asked for exactly this window, not the whole video
        assert reader.reads[-1] == ("a", item["start"], item["start"] + 64)
        np.testing.assert_array_equal(item["feats"][4][:, 0, 0].numpy(), np.arange(64) + item["start"] + 4)
    assert len(starts) > 1


def test_training_skips_videos_without_actions_and_cache():
    reader = FakeReader({"a": 30, "b": 30})
    ann = make_ann({"a": ("train", [(1, 2, "run")]), "b": ("train", [])})
    ds = StoreDataset(reader, ann, "train", [4], cache=True, crop_ratio=None)
    assert [r.video_id for r in ds.records] == ["a"]
    ds[0]
    ds[0]
    assert len(reader.reads) == 1  # cached after the first read
    assert len(StoreDataset(reader, ann, "train", [4], training=False)) == 2


def test_collate_pads_to_multiple_and_masks():
    assert padded_length(33, 32) == 64 and padded_length(32, 32) == 32 and padded_length(1, 4) == 4
    reader = FakeReader({"a": 37, "b": 10})
    ds = InferenceDataset(reader, ["a", "b"], [4, 8])
    batch = Collate(pad_multiple=16)([ds[0], ds[1]])
    assert batch["feats"][4].shape == (2, 48, 1, 3)
    assert batch["mask"].dtype == torch.bool
    assert batch["mask"].sum(1).tolist() == [37, 10]
    assert not batch["mask"][1, 10:].any() and batch["mask"][1, :10].all()
    assert torch.all(batch["feats"][8][1, 10:] == 0)
    assert batch["video_ids"] == ["a", "b"] and batch["lengths"].tolist() == [37, 10]


def test_length_sorted_batches():
    assert length_sorted_batches([5, 50, 20, 49, 1], 2) == [[1, 3], [2, 0], [4]]


def test_real_store_annotations_land_on_the_signal_steps(tmp_path):
    """On a real Zarr store, the mapped segments cover exactly the steps that carry the action signal."""
    from stages.data.annotations import load_annotations
    from stages.demo.synthetic_store import make_synthetic_store
    from storage import open_store

    data = make_synthetic_store(tmp_path / "f.zarr", num_videos=3, num_steps=(60, 90), channels=64,
                                layers=(2, 4), num_classes=2, seed=5, signal=4.0)
    reader, ann = open_store(data.store), load_annotations(data.annotations)
    ds = StoreDataset(reader, ann, "training", [2, 4], training=False)
    assert len(ds) == 3
    for i in range(len(ds)):
        item = ds[i]
        energy = (item["feats"][4] ** 2).mean(dim=(1, 2))  # ~1 on noise, ~17 inside actions
        inside = torch.zeros(item["num_steps"], dtype=torch.bool)
        for s, e in item["segments"].tolist():
            # action over steps a..b-1 is annotated as [a - 0.5, b - 0.5] in step coordinates
            assert s + 0.5 == pytest.approx(round(s + 0.5), abs=1e-4)
            assert e + 0.5 == pytest.approx(round(e + 0.5), abs=1e-4)
            inside[int(round(s + 0.5)) : int(round(e + 0.5))] = True
        assert inside.any()
        assert energy[inside].min() > 6 and energy[~inside].max() < 3
