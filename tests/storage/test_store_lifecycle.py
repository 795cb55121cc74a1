"""Zarr store lifecycle: provenance checks, creating/opening, resume after a crash, `_tmp`
leftovers, the failure log."""

from __future__ import annotations

import os

import numpy as np
import pytest
import zarr

from storage import (
    NotAStoreError,
    ProvenanceMismatch,
    ZarrActivationStore,
    check_provenance,
    open_store,
    safe_key,
    write_video,
)
from tests.storage.store_data import PROV, arrays_for, times_for


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
