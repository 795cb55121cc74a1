"""`merge_stores` / `losa-store merge`: per-shard stores (object-storage path) merged into one."""
from __future__ import annotations

import numpy as np
import pytest
from click.testing import CliRunner

from pipeline.cli_store import main
from storage import ProvenanceMismatch, StoreError, ZarrActivationStore, open_store, write_video
from storage.merge import merge_stores

PROV = {"backbone": {"preset": "test"}, "layers": [2, 4], "cells": 2, "channels": 3}


def _video(seed: int, steps: int = 7):
    rng = np.random.default_rng(seed)
    arrays = {layer: rng.normal(size=(steps, 2, 3)).astype(np.float32) for layer in (2, 4)}
    times = (np.arange(steps) * 4 + 8) / 30.0
    return arrays, times, {"fc_norm": rng.normal(size=(steps, 3)).astype(np.float32)}


def _shard(path, vids, prov=PROV, dtype="float16", failed=()):
    store = ZarrActivationStore.create_or_open(path, prov)
    for vid, seed in vids:
        arrays, times, feats = _video(seed)
        write_video(store, vid, arrays, times, {"fps": 30.0, "source": f"/v/{vid}.mp4"}, chunk_steps=3,
                    dtype=dtype, features=feats)
    for vid in failed:
        store.record_failure(vid, f"/v/{vid}.mp4", "cannot open as a video")
    return path


def test_merge_copies_every_video_exactly_and_is_resumable(tmp_path):
    a = _shard(tmp_path / "a.zarr", [("v1", 1), ("dup", 9)])
    b = _shard(tmp_path / "b.zarr", [("v2", 2), ("dup", 9)], failed=["bad", "v1"])  # v1 done in shard a
    c = _shard(tmp_path / "c.zarr", [("v3", 3)], dtype="bfloat16")
    s = merge_stores(tmp_path / "all.zarr", [a, b, c])
    assert (s.copied, s.duplicates, s.failures, s.already_present) == (4, 1, 1, 0)
    out = open_store(tmp_path / "all.zarr")
    assert out.videos() == ["dup", "v1", "v2", "v3"] and out.provenance["backbone"] == PROV["backbone"]
    for shard, vid in ((a, "v1"), (a, "dup"), (b, "v2"), (c, "v3")):
        src = open_store(shard)
        for layer, arr in src.read(vid).items():
            np.testing.assert_array_equal(out.read(vid)[layer], arr)  # stored bits round-trip exactly
        np.testing.assert_array_equal(out.times(vid), src.times(vid))
        np.testing.assert_array_equal(out.read_feature(vid, "fc_norm"), src.read_feature(vid, "fc_norm"))
        assert out.video_info(vid)["source"] == f"/v/{vid}.mp4"
    assert out.summary()["dtypes"] == ["bfloat16", "float16"]
    assert [f["video_id"] for f in out.failures()] == ["bad"]
    again = merge_stores(tmp_path / "all.zarr", [a, b, c])
    assert (again.copied, again.already_present) == (0, 4)


def test_merge_refuses_mixed_provenance_and_conflicting_duplicates(tmp_path):
    a = _shard(tmp_path / "a.zarr", [("v1", 1)])
    other = _shard(tmp_path / "o.zarr", [("v2", 2)], prov={**PROV, "cells": 4})
    with pytest.raises(ProvenanceMismatch, match="cells"):
        merge_stores(tmp_path / "all.zarr", [a, other])
    assert not (tmp_path / "all.zarr").exists()
    clash = _shard(tmp_path / "x.zarr", [("v1", 5)])
    with pytest.raises(StoreError, match="'v1' differs between shards"):
        merge_stores(tmp_path / "all.zarr", [a, clash])


def test_store_cli_merge(tmp_path):
    a = _shard(tmp_path / "a.zarr", [("v1", 1)])
    b = _shard(tmp_path / "b.zarr", [("v2", 2)])
    res = CliRunner().invoke(main, ["merge", str(tmp_path / "m.zarr"), str(a), str(b)])
    assert res.exit_code == 0, res.output
    assert "copied 2 video(s) from 2 shard(s)" in res.output
    bad = CliRunner().invoke(main, ["merge", str(tmp_path / "m.zarr"), str(tmp_path / "missing.zarr")])
    assert bad.exit_code != 0 and "Traceback" not in bad.output and "missing.zarr" in bad.output
