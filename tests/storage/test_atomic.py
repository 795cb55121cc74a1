"""The project's one atomic-write helper (storage/atomic.py)."""
from __future__ import annotations

import json

import pytest

from storage.atomic import atomic_path, atomic_write, atomic_write_json


def test_writes_bytes_text_callable_and_json(tmp_path):
    assert atomic_write(tmp_path / "sub" / "a.bin", b"\x00\x01").read_bytes() == b"\x00\x01"  # folder made
    assert atomic_write(tmp_path / "t.txt", "héllo").read_text(encoding="utf-8") == "héllo"
    assert atomic_write(tmp_path / "c.bin", lambda fh: fh.write(b"xyz")).read_bytes() == b"xyz"
    path = atomic_write_json(tmp_path / "m.json", {"a": [1, 2]})
    assert json.loads(path.read_text()) == {"a": [1, 2]} and path.read_text().endswith("\n")
    assert sorted(p.name for p in tmp_path.iterdir()) == ["c.bin", "m.json", "sub", "t.txt"]  # no temp left


def test_a_failed_write_keeps_the_old_file_and_leaves_no_temp(tmp_path):
    target = tmp_path / "model.pt"
    target.write_bytes(b"old")

    def boom(fh):
        fh.write(b"partial")
        raise RuntimeError("disk gone")

    with pytest.raises(RuntimeError, match="disk gone"):
        atomic_write(target, boom)
    with pytest.raises(KeyError):
        with atomic_path(target) as tmp:
            tmp.write_bytes(b"partial")
            raise KeyError("x")
    assert target.read_bytes() == b"old" and [p.name for p in tmp_path.iterdir()] == ["model.pt"]


def test_names_at_the_length_limit_and_unique_temp_names(tmp_path):
    long = tmp_path / ("v" * 251 + ".npy")  # 255 bytes: the temp name must not exceed the limit
    assert atomic_write(long, b"1").read_bytes() == b"1"
    with atomic_path(tmp_path / "x") as a, atomic_path(tmp_path / "x") as b:
        assert a != b and a.parent == b.parent == tmp_path
        a.write_bytes(b"a")
        b.write_bytes(b"b")
    assert (tmp_path / "x").read_bytes() == b"a"  # the last to finish wins (a's block exits last)
