"""Activation store: keys, Zarr write/read round trips, crash/resume semantics, HDF5 + npy export."""

from __future__ import annotations

import json
import os
import zlib
from pathlib import Path

import numpy as np
import pytest
import zarr

from storage import (
    HDF5Reader,
    NotAStoreError,
    ProvenanceMismatch,
    StoreError,
    UnknownLayerError,
    UnknownVideoError,
    ZarrActivationStore,
    ZarrReader,
    check_provenance,
    convert_store,
    export_npy,
    layer_name,
    open_store,
    parse_layer_name,
    safe_key,
    unsafe_key,
    write_video,
)

HOSTILE = ["../x", "a/b", "..", ".", ".hidden", "_tmp", "_locks", "ünï cödé 日本", "with space",
           "~7e", "~", "%2F", "a\\b", "tab\there", "new\nline", "e\u0301", "/abs/path", "-", "CAPS"]
PROV = {"preset": "tiny", "layers": [2, 4], "norm": "imagenet", "package_version": "0.1.0"}


def arrays_for(video_id: str, steps: int, layers=(2, 4), cells: int = 4, channels: int = 8) -> dict:
    rng = np.random.default_rng(zlib.crc32(video_id.encode("utf-8", "surrogatepass")))
    return {layer: rng.standard_normal((steps, cells, channels)).astype(np.float32) * 3 for layer in layers}


def times_for(steps: int) -> np.ndarray:
    return (np.arange(steps) * 4 + 8) / 30.0


@pytest.fixture
def store(tmp_path: Path) -> ZarrActivationStore:
    return ZarrActivationStore.create_or_open(tmp_path / "features.zarr", PROV)


# ---- keys -------------------------------------------------------------------------------------
def test_safe_key_hostile_names_round_trip_and_are_plain_names():
    keys = [safe_key(v) for v in HOSTILE]
    assert len(set(keys)) == len(HOSTILE)
    for video_id, key in zip(HOSTILE, keys, strict=True):
        assert unsafe_key(key) == video_id
        assert "/" not in key and "\\" not in key and "\n" not in key and " " not in key
        assert key not in (".", "..") and not key.startswith((".", "_"))
    assert safe_key("video_test_0000004") == "video_test_0000004"
    assert safe_key("ünï cödé 日本") == "ünï~20cödé~20日本"  # letters stay readable
    assert safe_key("a/b") == "a~2fb" and safe_key("~7e") == "~7e7e"


@pytest.mark.parametrize("bad", ["", "a~2F", "~zz", ".x", "_x", "a b", "x~", "~c3"])
def test_unsafe_key_rejects_non_canonical(bad):
    with pytest.raises(ValueError):
        unsafe_key(bad)


def test_safe_key_rejects_empty_and_non_str():
    with pytest.raises(ValueError, match="empty"):
        safe_key("")
    with pytest.raises(ValueError):
        safe_key(3)  # type: ignore[arg-type]


def test_layer_names():
    assert layer_name(8) == "layer_08" and layer_name(40) == "layer_40" and layer_name(123) == "layer_123"
    assert parse_layer_name("layer_08") == 8 and parse_layer_name("layer_8") is None
    assert parse_layer_name("times") is None and parse_layer_name("layer_00") is None
    with pytest.raises(ValueError):
        layer_name(0)


# ---- write / read -----------------------------------------------------------------------------
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


# ---- provenance / opening -----------------------------------------------------------------------
def test_provenance_refusal_and_package_version_ignored(tmp_path):
    path = tmp_path / "s.zarr"
    ZarrActivationStore.create_or_open(path, PROV)
    again = ZarrActivationStore.create_or_open(path, {**PROV, "layers": (2, 4), "package_version": "9"})
    assert again.provenance == PROV  # the recorded one
    with pytest.raises(ProvenanceMismatch) as err:
        ZarrActivationStore.create_or_open(path, {**PROV, "norm": "255", "seed": 1})
    msg = str(err.value)
    assert 'norm: store has "imagenet", requested "255"' in msg
    assert "seed: store has <absent>, requested 1" in msg and "preset" not in msg
    assert isinstance(err.value, ValueError)


def test_check_provenance_direct():
    check_provenance({"a": [1, 2], "package_version": "1"}, {"a": (1, 2), "package_version": "2"})
    with pytest.raises(ProvenanceMismatch, match=r"b: store has \{\"c\": 1\}, requested <absent>"):
        check_provenance({"a": 1, "b": {"c": 1}}, {"a": 1})


def test_create_refuses_foreign_directory_and_files(tmp_path):
    (tmp_path / "busy").mkdir()
    (tmp_path / "busy" / "holiday.jpg").write_bytes(b"x")
    with pytest.raises(NotAStoreError, match="non-empty directory"):
        ZarrActivationStore.create_or_open(tmp_path / "busy", PROV)
    (tmp_path / "file.zarr").write_text("x")
    with pytest.raises(NotAStoreError, match="not a directory"):
        ZarrActivationStore.create_or_open(tmp_path / "file.zarr", PROV)
    zarr.open_group(tmp_path / "other.zarr", mode="w", attributes={"format": "something-else"})
    with pytest.raises(NotAStoreError, match="not a LoSA activation store"):
        ZarrActivationStore.create_or_open(tmp_path / "other.zarr", PROV)


def test_open_store_errors(tmp_path):
    with pytest.raises(FileNotFoundError, match="missing.zarr"):
        open_store(tmp_path / "missing.zarr")
    (tmp_path / "empty").mkdir()
    with pytest.raises(NotAStoreError, match="empty"):
        open_store(tmp_path / "empty")
    (tmp_path / "notes.txt").write_text("hello")
    with pytest.raises(NotAStoreError, match="notes.txt"):
        open_store(tmp_path / "notes.txt")
    zarr.open_group(tmp_path / "plain.zarr", mode="w")
    with pytest.raises(NotAStoreError, match="plain.zarr"):
        open_store(tmp_path / "plain.zarr")
    zarr.open_group(tmp_path / "future.zarr", mode="w",
                    attributes={"format": "losa-activations", "format_version": 99})
    with pytest.raises(NotAStoreError, match="format_version 99"):
        open_store(tmp_path / "future.zarr")


# ---- resume / crash leftovers / failures --------------------------------------------------------
def test_resume_semantics(store):
    assert not store.is_complete("v")
    assert write_video(store, "v", arrays_for("v", 6), times_for(6))
    assert store.is_complete("v")
    with store.claim("v") as mine:
        assert mine is False
    assert write_video(store, "v", arrays_for("other", 6), times_for(6)) is False
    np.testing.assert_array_equal(  # unchanged
        open_store(store.path).read("v")[2], arrays_for("v", 6)[2].astype(np.float16).astype(np.float32))
    with store.claim("w") as outer:  # a second claim of the same video (even in-process) is refused
        with store.claim("w") as inner:
            assert outer and not inner


def test_tmp_leftovers_invisible_and_cleaned(store):
    # what a killed writer leaves behind: a half-written group plus a zarr ".partial" file
    junk = store.path / "_tmp" / safe_key("crashed")
    zarr.open_group(junk, mode="w").create_array("layer_02", shape=(4, 1, 2), dtype="float16")
    (junk / "layer_02" / "zarr.json.0123.partial").write_bytes(b"{")
    reader = open_store(store.path)
    assert reader.videos() == [] and "crashed" not in reader and reader.summary()["videos"] == 0
    with store.claim("crashed") as mine:
        assert mine and not junk.exists()
    assert write_video(store, "crashed", arrays_for("crashed", 4), times_for(4))
    assert sorted(os.listdir(store.path / "_tmp")) == ["zarr.json"]
    assert open_store(store.path).videos() == ["crashed"]


def test_zarr_discovers_children_without_parent_metadata_rewrite(store):
    before = (store.path / "videos" / "zarr.json").read_bytes()
    write_video(store, "a/b", arrays_for("a/b", 3), times_for(3))
    write_video(store, "c", arrays_for("c", 3), times_for(3))
    assert (store.path / "videos" / "zarr.json").read_bytes() == before
    root = zarr.open_group(store.path, mode="r")
    assert sorted(root["videos"].group_keys()) == ["a~2fb", "c"]
    assert root.attrs["format"] == "losa-activations"
    assert root["videos"]["c"]["layer_04"].shape == (3, 4, 8)


def test_failures_log_and_cleared_by_success(store):
    store.record_failure("broken/one", "in/broken/one.mp4", "decord: cannot open")
    store.record_failure("two", "in/two.mkv", "too short")
    store.record_failure("two", "in/two.mkv", "too short, again")  # replaces
    fails = open_store(store.path).failures()
    assert [(f["video_id"], f["source"], f["reason"]) for f in fails] == [
        ("broken/one", "in/broken/one.mp4", "decord: cannot open"), ("two", "in/two.mkv", "too short, again")]
    assert all("time" in f for f in fails)
    assert write_video(store, "two", arrays_for("two", 3), times_for(3))
    assert not (store.path / "failures" / "two").exists()
    assert [f["video_id"] for f in open_store(store.path).failures()] == ["broken/one"]
    store.record_failure("two", "in/two.mkv", "late")  # complete videos do not get failure entries
    assert [f["video_id"] for f in open_store(store.path).failures()] == ["broken/one"]
    with store.claim("three") as mine:  # recording inside the claim aborts the open writer
        assert mine
        store.begin_video("three", layers=[1], cells=1, channels=2, num_steps=2, dtype="float16", chunk_steps=2)
        store.record_failure("three", "in/three.mp4", "OOM")
    assert not (store.path / "_tmp" / "three").exists()
    assert open_store(store.path).summary()["failures"] == 2


# ---- summary / conversions ------------------------------------------------------------------------
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
