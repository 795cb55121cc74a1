"""Atomic file writes for the whole project: write next to the target, then ``os.replace``.

A reader (or a crashed writer's successor) sees either the old file or the complete new one, never
a partial file.  The temporary name is ``.<name>.<pid>.<random>.tmp`` in the target's folder (same
file system, so the rename is atomic; unique, so concurrent writers never share one; a short
``.tmp-<pid>-<random>`` when the target's name is near the length limit) and it is removed when
writing fails.  Kept free of torch / losa imports so `storage` can use it too.
"""
from __future__ import annotations

import json
import os
import secrets
from contextlib import contextmanager
from pathlib import Path
from typing import IO, Any, Callable, Iterator

__all__ = ["atomic_path", "atomic_write", "atomic_write_json"]

_NAME_MAX = 255  # bytes per file name on the usual file systems (ext4, xfs, btrfs, APFS)


@contextmanager
def atomic_path(path: str | os.PathLike, *, mkdir: bool = True) -> Iterator[Path]:
    """Yield a temporary path beside ``path``; on normal exit it replaces ``path``, on error it is deleted.

    For writers that want a file name (``np.save``, ``h5py.File``, ``savefig``, PyAV)."""
    path = Path(path)
    if mkdir:
        path.parent.mkdir(parents=True, exist_ok=True)
    name = f".{path.name}.{os.getpid()}.{secrets.token_hex(4)}.tmp"
    if len(os.fsencode(name)) > _NAME_MAX:  # the target's name may use the whole limit itself
        name = f".tmp-{os.getpid()}-{secrets.token_hex(4)}"
    tmp = path.with_name(name)
    try:
        yield tmp
        os.replace(tmp, path)
    finally:
        tmp.unlink(missing_ok=True)


def atomic_write(path: str | os.PathLike, data: bytes | str | Callable[[IO[bytes]], Any], *,
                 fsync: bool = True, mkdir: bool = True) -> Path:
    """Write bytes, UTF-8 text or ``data(binary file)`` atomically (fsync'ed before the rename)."""
    path = Path(path)
    with atomic_path(path, mkdir=mkdir) as tmp:
        with open(tmp, "wb") as fh:
            if callable(data):
                data(fh)
            else:
                fh.write(data.encode("utf-8") if isinstance(data, str) else data)
            fh.flush()
            if fsync:
                os.fsync(fh.fileno())
    return path


def atomic_write_json(path: str | os.PathLike, obj: Any, *, indent: int | None = 1, fsync: bool = True,
                      **dumps: Any) -> Path:
    """``json.dumps(obj)`` plus a final newline, written atomically."""
    return atomic_write(path, json.dumps(obj, indent=indent, **dumps) + "\n", fsync=fsync)
