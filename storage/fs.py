"""File-system primitives of the Zarr store's crash safety and concurrency (POSIX).

`_flock` takes an exclusive ``flock`` on a lock file (non-blocking for a video claim, blocking for
store creation; the kernel releases it when the process dies) and `_fsync_tree` / `_fsync_path`
flush a written video and its parent directory, so a published video survives a power loss.
"""

from __future__ import annotations

import fcntl
import os
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

__all__: list[str] = []


@contextmanager
def _flock(path: Path, blocking: bool) -> Iterator[bool]:
    """flock(LOCK_EX) on `path` (created if needed); yields whether the lock was obtained."""
    fd = os.open(path, os.O_RDWR | os.O_CREAT, 0o644)
    try:
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | (0 if blocking else fcntl.LOCK_NB))
        except BlockingIOError:
            yield False
            return
        try:
            yield True
        finally:
            fcntl.flock(fd, fcntl.LOCK_UN)
    finally:
        os.close(fd)


def _fsync_path(path: Path) -> None:
    fd = os.open(path, os.O_RDONLY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


def _fsync_tree(root: Path) -> None:
    """fsync every file and directory under `root` (so a published video survives power loss)."""
    for dirpath, _dirs, files in os.walk(root):
        for name in files:
            _fsync_path(Path(dirpath) / name)
        _fsync_path(Path(dirpath))
