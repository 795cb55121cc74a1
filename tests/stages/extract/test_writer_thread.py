"""The extraction writer thread creates the video's arrays (``prepare``) before its first write, off
the encoding thread; a writer prepared that way commits the same video."""
from __future__ import annotations

import threading

import numpy as np

from stages.extract.writer import ChunkedWriter
from storage import ZarrActivationStore, open_store
from tests.storage.store_data import PROV, arrays_for, times_for


class _Recorder:
    def __init__(self) -> None:
        self.calls: list[tuple[str, str]] = []

    def prepare(self) -> None:
        self.calls.append(("prepare", threading.current_thread().name))

    def write(self, t0, arrays) -> None:
        self.calls.append((f"write {t0}", threading.current_thread().name))


def test_prepare_runs_first_in_the_writer_thread():
    rec = _Recorder()
    with ChunkedWriter(rec, num_steps=6, chunk_steps=4) as sink:
        sink.put(0, {2: np.zeros((3, 1, 1))})
        sink.put(3, {2: np.zeros((3, 1, 1))})
    assert [c for c, _ in rec.calls] == ["prepare", "write 0", "write 4"]
    assert {t for _, t in rec.calls} == {"store-writer"}


def test_writer_prepared_in_the_thread_commits_the_same_video(tmp_path):
    store = ZarrActivationStore.create_or_open(tmp_path / "features.zarr", PROV)
    data = arrays_for("v", 6)
    with store.claim("v") as mine:
        assert mine
        writer = store.begin_video("v", layers=[2, 4], cells=4, channels=8, num_steps=6, chunk_steps=4)
        assert not writer.tmp.exists()  # nothing written on the caller's path yet
        with ChunkedWriter(writer, 6, 4) as sink:
            sink.put(0, {k: v[:4] for k, v in data.items()})
            sink.put(4, {k: v[4:] for k, v in data.items()})
        writer.commit(times_for(6), {"source": "v.mp4"})
    got = open_store(store.path).read("v")
    for layer in (2, 4):
        np.testing.assert_array_equal(got[layer], data[layer].astype(np.float16).astype(np.float32))
