"""Store summary and conversions: Zarr → HDF5 → npy round trips, export options, HDF5 reader
checks, readers used across fork."""

from __future__ import annotations

import json

import numpy as np
import pytest

from storage import (
    HDF5Reader,
    NotAStoreError,
    StoreError,
    UnknownLayerError,
    UnknownVideoError,
    convert_store,
    export_npy,
    open_store,
    safe_key,
    write_video,
)
from tests.storage.store_data import PROV, arrays_for, times_for


def _filled(store) -> dict[str, dict]:
    data = {}
    for i, vid in enumerate(["alpha", "beta/gamma", "delta δ"]):
        steps = 20 + 7 * i
        data[vid] = arrays_for(vid, steps)
        write_video(store, vid, data[vid], times_for(steps),
                    {"fps": 30.0, "source": f"in/{vid}.mp4", "extra": {"i": i}}, chunk_steps=8,
                    dtype="bfloat16" if i == 1 else "float16")
    store.record_failure("bad", "in/bad.mp4", "no frames")
    return data


def test_summary_numbers(store):
    _filled(store)
    s = open_store(store.path).summary()
    steps = 20 + 27 + 34
    assert s["videos"] == 3 and s["layers"] == [2, 4] and s["shapes"] == {2: [4, 8], 4: [4, 8]}
    assert s["total_steps"] == steps and s["failures"] == 1
    assert s["dtypes"] == ["bfloat16", "float16"]
    assert s["raw_bytes"] == steps * 2 * 4 * 8 * 2 + steps * 8  # 2 layers x 2 bytes + float64 times
    disk = sum(p.stat().st_size for p in store.path.rglob("*") if p.is_file())
    assert s["bytes_on_disk"] == disk
    assert s["compression_ratio"] == pytest.approx(s["raw_bytes"] / disk)
    json.dumps(s)  # JSON-friendly for CLIs


@pytest.mark.parametrize("compression", ["gzip", "lzf"])
def test_zarr_hdf5_npy_round_trip(store, tmp_path, compression):
    data = _filled(store)
    zr = open_store(store.path)
    h5_path = convert_store(zr, tmp_path / "out" / "features.h5", compression=compression)
    with open_store(h5_path) as hr:
        assert isinstance(hr, HDF5Reader)
        assert hr.provenance == zr.provenance == PROV
        assert hr.videos() == zr.videos() == sorted(data)
        assert hr.failures() == zr.failures()
        assert hr.summary()["raw_bytes"] == zr.summary()["raw_bytes"]
        for vid in data:
            assert hr.video_info(vid) == zr.video_info(vid)
            np.testing.assert_array_equal(hr.times(vid), zr.times(vid))
            a, b = hr.read(vid, t0=3, t1=19), zr.read(vid, t0=3, t1=19)
            assert sorted(a) == sorted(b) == [2, 4]
            for layer in a:
                assert a[layer].dtype == np.float32
                np.testing.assert_array_equal(a[layer], b[layer])
        with pytest.raises(UnknownVideoError, match="'bad'"):
            hr.read("bad")
        idx_z = export_npy(zr, tmp_path / "npy_z", layer=4)
        idx_h = export_npy(hr, tmp_path / "npy_h", layer=4)
    index = json.loads(idx_z.read_text("utf-8"))
    assert index == json.loads(idx_h.read_text("utf-8"))
    assert sorted(index) == sorted(safe_key(v) for v in data)
    for vid in data:
        key = safe_key(vid)
        feats = np.load(tmp_path / "npy_z" / f"{key}.npy")
        np.testing.assert_array_equal(feats, np.load(tmp_path / "npy_h" / f"{key}.npy"))
        assert feats.dtype == np.float32 and feats.shape == (len(data[vid][4]), 8)
        np.testing.assert_allclose(feats, zr.read(vid, [4])[4].mean(axis=1), rtol=1e-6)
        entry = index[key]
        assert entry["video_id"] == vid and entry["fps"] == 30.0 and entry["num_steps"] == len(feats)
        assert entry["times_first"] == pytest.approx(8 / 30) and entry["step_seconds"] == pytest.approx(4 / 30)
    with pytest.raises(StoreError, match="already exists.*--overwrite"):
        convert_store(zr, h5_path)
    assert not [p for p in h5_path.parent.iterdir() if p.name != "features.h5"]  # no temp files


def test_export_flatten_and_errors(store, tmp_path):
    data = _filled(store)
    reader = open_store(store.path)
    export_npy(reader, tmp_path / "flat", layer=2, cells="flatten", videos=["alpha"])
    feats = np.load(tmp_path / "flat" / "alpha.npy")
    np.testing.assert_array_equal(feats, reader.read("alpha", [2])[2].reshape(len(data["alpha"][2]), -1))
    assert sorted(p.name for p in (tmp_path / "flat").iterdir()) == ["alpha.npy", "index.json"]
    with pytest.raises(UnknownLayerError, match="layer 9"):
        export_npy(reader, tmp_path / "x", layer=9)
    assert not (tmp_path / "x").exists() and not list(tmp_path.glob(".x.*"))  # nothing left behind
    with pytest.raises(StoreError, match="not empty.*--overwrite"):            # never clobbers
        export_npy(reader, tmp_path / "flat", layer=2)
    assert sorted(p.name for p in (tmp_path / "flat").iterdir()) == ["alpha.npy", "index.json"]
    export_npy(reader, tmp_path / "flat", layer=2, overwrite=True)              # replaced whole
    assert len(json.loads((tmp_path / "flat" / "index.json").read_text())) == len(reader.videos())
    with pytest.raises(StoreError, match="cells mode"):
        export_npy(reader, tmp_path / "x", layer=2, cells="max")


def test_hdf5_reader_rejects_other_hdf5(tmp_path):
    import h5py

    with h5py.File(tmp_path / "other.h5", "w") as f:
        f.create_dataset("x", data=[1, 2])
    with pytest.raises(NotAStoreError, match="other.h5"):
        open_store(tmp_path / "other.h5")


def _read_in_child(reader, video_id, queue) -> None:
    queue.put(reader.read(video_id, [4], 2, 9)[4])


@pytest.mark.parametrize("backend", ["zarr", "hdf5"])
def test_reader_usable_after_fork(store, tmp_path, backend):
    """DataLoader workers fork a reader that the parent has already used."""
    import multiprocessing as mp

    if "fork" not in mp.get_all_start_methods():
        pytest.skip("no fork on this platform")
    _filled(store)
    reader = open_store(store.path)
    if backend == "hdf5":
        reader = open_store(convert_store(reader, tmp_path / "f.h5"))
    expected = reader.read("alpha", [4], 2, 9)[4]  # opens handles / caches arrays in the parent
    ctx = mp.get_context("fork")
    queue = ctx.Queue()
    child = ctx.Process(target=_read_in_child, args=(reader, "alpha", queue))
    child.start()
    got = queue.get(timeout=30)
    child.join(timeout=30)
    assert child.exitcode == 0
    np.testing.assert_array_equal(got, expected)
    np.testing.assert_array_equal(reader.read("alpha", [4], 2, 9)[4], expected)  # parent still fine
    reader.close()
