"""Zarr store write → read round trips: dtypes, slices, unknown ids/layers, hostile names on disk,
incremental writes, writer validation, abort."""

from __future__ import annotations

import os

import numpy as np
import pytest
import zarr

from storage import (
    StoreError,
    UnknownLayerError,
    UnknownVideoError,
    ZarrReader,
    open_store,
    safe_key,
    write_video,
)
from tests.storage.store_data import HOSTILE, PROV, arrays_for, times_for


@pytest.mark.parametrize("dtype", ["float16", "bfloat16", "float32"])
def test_round_trip_values_and_dtypes(store, dtype):
    arrays = arrays_for("clip", 37)
    attrs = {"source": "videos/clip.mp4", "fps": 30.0, "num_frames": 160, "duration": 5.33,
             "extra": {"decoder": "decord"}}
    assert write_video(store, "clip", arrays, times_for(37), attrs, chunk_steps=8, dtype=dtype)
    reader = open_store(store.path)
    assert isinstance(reader, ZarrReader)
    out = reader.read("clip")
    assert sorted(out) == [2, 4]
    for layer, ref in arrays.items():
        assert out[layer].dtype == np.float32 and out[layer].shape == (37, 4, 8)
        if dtype == "float16":
            np.testing.assert_array_equal(out[layer], ref.astype(np.float16).astype(np.float32))
        elif dtype == "float32":
            np.testing.assert_array_equal(out[layer], ref)
        else:  # bfloat16 keeps 8 mantissa bits: relative error <= 2**-8
            np.testing.assert_allclose(out[layer], ref, rtol=2.0**-8, atol=0)
            assert not np.array_equal(out[layer], ref)
    stored = zarr.open_array(store.path / "videos" / "clip" / "layer_02", mode="r")
    expect = {"float16": np.float16, "bfloat16": np.uint16, "float32": np.float32}[dtype]
    assert stored.dtype == expect and stored.attrs["dtype"] == dtype
    assert stored.chunks == (8, 4, 8)
    np.testing.assert_array_equal(reader.times("clip"), times_for(37))
    info = reader.video_info("clip")
    assert info == {"video_id": "clip", "num_steps": 37, **attrs}
    assert reader.provenance == PROV


def test_bfloat16_matches_torch_rounding(store):
    torch = pytest.importorskip("torch")
    rng = np.random.default_rng(1)
    x = (rng.standard_normal((20, 2, 16)) * np.logspace(-8, 8, 16)).astype(np.float32)
    x[0, 0, :4] = [np.inf, -np.inf, 0.0, -0.0]
    write_video(store, "bf", {3: x}, times_for(20), dtype="bfloat16")
    got = open_store(store.path).read("bf")[3]
    ref = torch.from_numpy(x).bfloat16().float().numpy()
    np.testing.assert_array_equal(got, ref)
    # raw uint16 bits are accepted as-is
    bits = torch.from_numpy(x).bfloat16().view(torch.int16).numpy().view(np.uint16)
    write_video(store, "bf_bits", {3: bits}, times_for(20), dtype="bfloat16")
    np.testing.assert_array_equal(open_store(store.path).read("bf_bits")[3], ref)


def test_slices_and_layer_selection(store):
    arrays = arrays_for("v", 50, layers=(1, 5, 12))
    write_video(store, "v", arrays, times_for(50), chunk_steps=16)
    reader = open_store(store.path)
    assert reader.layers() == [1, 5, 12] and reader.num_steps("v") == 50
    for t0, t1 in [(0, 50), (3, 17), (16, 32), (49, 50), (10, 10)]:
        out = reader.read("v", [12, 1], t0, t1)
        assert sorted(out) == [1, 12]
        np.testing.assert_array_equal(out[12], arrays[12][t0:t1].astype(np.float16).astype(np.float32))
    np.testing.assert_array_equal(reader.read("v", [5], t0=45)[5], reader.read("v")[5][45:])
    assert list(reader.read("v", 5, 0, 2)) == [5]
    for t0, t1 in [(-1, 5), (5, 51), (6, 5)]:
        with pytest.raises(StoreError, match="out of bounds 0:50 for video 'v'"):
            reader.read("v", None, t0, t1)


def test_unknown_video_and_layer_errors_name_them(store):
    write_video(store, "v", arrays_for("v", 5), times_for(5))
    reader = open_store(store.path)
    with pytest.raises(UnknownVideoError, match="'nope'"):
        reader.read("nope")
    with pytest.raises(UnknownVideoError, match="'nope'"):
        reader.times("nope")
    with pytest.raises(UnknownLayerError, match="layer 7 not stored for video 'v'"):
        reader.read("v", [2, 7])
    assert "v" in reader and "nope" not in reader and "" not in reader


def test_hostile_names_stay_inside_store(store):
    for i, video_id in enumerate(HOSTILE):
        assert write_video(store, video_id, arrays_for(video_id, 3 + i), times_for(3 + i))
    videos_dir = (store.path / "videos").resolve()
    for entry in videos_dir.iterdir():
        assert entry.resolve().parent == videos_dir
    assert sorted(p.name for p in videos_dir.iterdir() if p.is_dir()) == sorted(map(safe_key, HOSTILE))
    assert sorted(os.listdir(store.path)) == ["_locks", "_tmp", "failures", "videos", "zarr.json"]
    assert sorted(os.listdir(store.path / "_tmp")) == ["zarr.json"]
    reader = open_store(store.path)
    assert reader.videos() == sorted(HOSTILE)
    for i, video_id in enumerate(HOSTILE):
        assert reader.video_info(video_id)["video_id"] == video_id
        np.testing.assert_array_equal(
            reader.read(video_id)[2], arrays_for(video_id, 3 + i)[2].astype(np.float16).astype(np.float32)
        )


def test_incremental_unaligned_writes(store):
    arrays = arrays_for("inc", 45)
    with store.claim("inc") as mine:
        assert mine
        writer = store.begin_video("inc", layers=[4, 2], cells=4, channels=8, num_steps=45,
                                   dtype="float16", chunk_steps=16)
        for t0 in (30, 0, 7, 21):  # any order, unaligned
            t1 = {30: 45, 0: 7, 7: 21, 21: 30}[t0]
            writer.write(t0, {k: v[t0:t1] for k, v in arrays.items()})
        assert open_store(store.path).videos() == []  # not visible before commit
        writer.commit(times_for(45), {"fps": 30.0})
    out = open_store(store.path).read("inc")
    np.testing.assert_array_equal(out[4], arrays[4].astype(np.float16).astype(np.float32))


def test_writer_validation(store):
    with pytest.raises(StoreError, match="not claimed"):
        store.begin_video("x", layers=[1], cells=1, channels=4, num_steps=3, dtype="float16", chunk_steps=2)
    with store.claim("x") as mine:
        assert mine
        with pytest.raises(StoreError, match="unknown store dtype"):
            store.begin_video("x", layers=[1], cells=1, channels=4, num_steps=3, dtype="int8", chunk_steps=2)
        w = store.begin_video("x", layers=[1, 3], cells=1, channels=4, num_steps=3, dtype="float16",
                              chunk_steps=2)
        ok = np.ones((2, 1, 4), np.float32)
        with pytest.raises(StoreError, match=r"needs exactly layers \[1, 3\]"):
            w.write(0, {1: ok})
        with pytest.raises(StoreError, match="expected shape"):
            w.write(0, {1: ok, 3: np.ones((2, 1, 5), np.float32)})
        with pytest.raises(StoreError, match="out of range 0:3"):
            w.write(2, {1: ok, 3: ok})
        with pytest.raises(StoreError, match="overflow float16"):
            w.write(0, {1: ok * 1e6, 3: ok})
        w.write(0, {1: ok, 3: ok})
        with pytest.raises(StoreError, match="layer 1: step 2 was never written"):
            w.commit(times_for(3))
        w.write(1, {1: ok, 3: ok})
        with pytest.raises(StoreError, match="strictly increasing"):
            w.commit(np.array([0.0, 1.0, 1.0]))
        with pytest.raises(StoreError, match=r"times must have shape \(3,\)"):
            w.commit(times_for(4))
        with pytest.raises(StoreError, match="contradicts"):
            w.commit(times_for(3), {"num_steps": 4})
        w.commit(times_for(3), {"fps": 7.5})
        with pytest.raises(StoreError, match="already committed"):
            w.write(0, {1: ok, 3: ok})
    assert store.is_complete("x")


def test_abort_and_exception_leave_nothing(store):
    with store.claim("a") as mine:
        assert mine
        w = store.begin_video("a", layers=[1], cells=1, channels=2, num_steps=4, dtype="float16", chunk_steps=2)
        w.write(0, {1: np.zeros((2, 1, 2), np.float32)})
        assert (store.path / "_tmp" / "a").is_dir()
        w.abort()
        assert not (store.path / "_tmp" / "a").exists()
    with pytest.raises(RuntimeError):
        with store.claim("b"):
            store.begin_video("b", layers=[1], cells=1, channels=2, num_steps=4, dtype="float16", chunk_steps=2)
            raise RuntimeError("extraction crashed")
    assert not (store.path / "_tmp" / "b").exists()
    assert not store.is_complete("a") and not store.is_complete("b")
