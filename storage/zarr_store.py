"""Zarr v3 activation store: the crash-safe, multi-process store on disk (DESIGN.md §2).

Crash safety: a video is written as a standalone Zarr group under ``_tmp/<key>/`` and published by
one ``os.rename`` to ``videos/<key>/``. Zarr v3 finds a group's children by listing the directory
(the ``videos`` group's own ``zarr.json`` never changes), so readers see either nothing or a
complete video. Concurrency: ``claim()`` holds ``flock(LOCK_EX | LOCK_NB)`` on
``_locks/<key>.lock`` (released by the kernel if the process dies); store creation is serialised by
a blocking flock on ``_locks/_store.lock``. Intended for local (POSIX) file systems.

This module holds the store itself (`ZarrActivationStore`: create/open, claims, failure log,
publishing); writing a video is `zarr_writer.py` (`VideoWriter`, `write_video`, `COMPRESSOR`),
reading `zarr_reader.py` (`ZarrReader`), the lock and fsync primitives `fs.py`; their names are
re-exported here.
"""

from __future__ import annotations

import datetime as _dt
import os
import shutil
from collections.abc import Iterator, Mapping, Sequence
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import zarr

from storage.errors import NotAStoreError, StoreError, StoreNotWritable
from storage.fs import _flock, _fsync_path, _fsync_tree
from storage.keys import safe_key
from storage.provenance import FORMAT, FORMAT_VERSION, _jsonable, check_provenance, check_root_attrs
from storage.zarr_reader import ZarrReader, _group_attrs
from storage.zarr_writer import COMPRESSOR, VideoWriter, write_video

__all__ = ["ZarrActivationStore", "VideoWriter", "ZarrReader", "write_video", "COMPRESSOR"]

_SUBGROUPS = ("videos", "failures", "_tmp", "_locks")
_STORE_LOCK = "_store.lock"  # keys never start with "_", so this cannot clash with a claim


class ZarrActivationStore:
    """Writer side of a Zarr activation store. Create with :meth:`create_or_open`."""

    def __init__(self, path: Path, provenance: dict) -> None:
        self.path = path
        self.provenance = provenance
        self._claimed: set[str] = set()
        self._writers: dict[str, VideoWriter] = {}

    # ---- opening ------------------------------------------------------------------------------
    @classmethod
    def create_or_open(cls, path: str | Path, provenance: Mapping[str, Any]) -> ZarrActivationStore:
        """Create the store at `path`, or open it if its recorded provenance equals `provenance`
        (ignoring "package_version"); ProvenanceMismatch otherwise. Safe to call concurrently."""
        p = Path(path)
        prov = _jsonable(dict(provenance), "provenance")
        if p.exists() and not p.is_dir():
            raise NotAStoreError(f"store path exists and is not a directory: {p}")
        try:
            return cls._create_or_open(p, prov)
        except OSError as exc:  # read-only file system or folder, disk full, no permission
            where = exc.filename or p
            raise StoreNotWritable(
                f"cannot write to store {p}: {exc.strerror or exc} ({where})"
            ) from None

    @classmethod
    def _create_or_open(cls, p: Path, prov: dict) -> ZarrActivationStore:
        (p / "_locks").mkdir(parents=True, exist_ok=True)
        with _flock(p / "_locks" / _STORE_LOCK, blocking=True):
            if (p / "zarr.json").is_file():
                attrs = _group_attrs(p)
                check_root_attrs(attrs, p)
                recorded = dict(attrs.get("provenance") or {})
                check_provenance(recorded, prov)
                return cls(p, recorded)
            strays = sorted(set(os.listdir(p)) - set(_SUBGROUPS))
            if strays:
                raise NotAStoreError(
                    f"refusing to create a store in non-empty directory {p} (found {strays[0]!r})"
                )
            # children first, root metadata last: a store is initialised iff its zarr.json exists
            for name in _SUBGROUPS:
                zarr.open_group(p / name, mode="a")
            root = {"format": FORMAT, "format_version": FORMAT_VERSION, "provenance": prov}
            zarr.open_group(p, mode="a", attributes=root)
            return cls(p, prov)

    def reader(self) -> ZarrReader:
        """A reader over this store (sees videos committed so far and later)."""
        return ZarrReader(self.path)

    # ---- claims -------------------------------------------------------------------------------
    def is_complete(self, video_id: str) -> bool:
        """True when `video_id` has been published to ``videos/``."""
        return (self.path / "videos" / safe_key(video_id) / "zarr.json").is_file()

    @contextmanager
    def claim(self, video_id: str) -> Iterator[bool]:
        """Context manager yielding True if this process holds the video's lock and must extract it.

        Yields False when the video is already complete or another live process holds the claim.
        On success any leftover ``_tmp/<key>`` of a dead writer is removed first.
        """
        key = safe_key(video_id)
        if self.is_complete(video_id):
            yield False
            return
        with _flock(self.path / "_locks" / f"{key}.lock", blocking=False) as got:
            if not got or self.is_complete(video_id):  # re-check: a holder may just have finished
                yield False
                return
            shutil.rmtree(self.path / "_tmp" / key, ignore_errors=True)
            self._claimed.add(key)
            try:
                yield True
            finally:
                writer = self._writers.pop(key, None)
                if writer is not None and writer.state == "open":
                    writer.abort()
                self._claimed.discard(key)

    def _require_claim(self, video_id: str, key: str) -> None:
        if key not in self._claimed:
            raise StoreError(
                f"video {video_id!r} is not claimed by this process; wrap the write in store.claim()"
            )

    # ---- writing ------------------------------------------------------------------------------
    def begin_video(
        self,
        video_id: str,
        *,
        layers: Sequence[int],
        cells: int,
        channels: int,
        num_steps: int,
        dtype: str = "float16",
        chunk_steps: int = 256,
        features: Mapping[str, int] | None = None,
    ) -> VideoWriter:
        """Start writing a claimed video: arrays ``layer_XX`` [num_steps, cells, channels] and, for
        every ``features`` entry ``name: C``, a float32 array ``feature_<name>`` [num_steps, C]."""
        key = safe_key(video_id)
        self._require_claim(video_id, key)
        old = self._writers.get(key)
        if old is not None and old.state == "open":
            old.abort()
        writer = VideoWriter(self, video_id, key, layers, cells, channels, num_steps, dtype, chunk_steps,
                             features)
        self._writers[key] = writer
        return writer

    def record_failure(self, video_id: str, source: str, reason: str) -> None:
        """Record that `video_id` could not be extracted (``failures/<key>`` attrs).

        Uses this process's claim if it holds one (aborting an open writer of that video), else
        takes the claim briefly; StoreError if another process is extracting the video. Nothing is
        recorded for a video that is already complete.
        """
        key = safe_key(video_id)
        if key in self._claimed:
            self._write_failure(video_id, key, source, reason)
            return
        with self.claim(video_id) as mine:
            if mine:
                self._write_failure(video_id, key, source, reason)
            elif not self.is_complete(video_id):
                raise StoreError(f"video {video_id!r} is being extracted by another process")

    def _write_failure(self, video_id: str, key: str, source: str, reason: str) -> None:
        writer = self._writers.pop(key, None)
        if writer is not None and writer.state == "open":
            writer.abort()
        tmp = self.path / "_tmp" / key
        shutil.rmtree(tmp, ignore_errors=True)
        attrs = {
            "video_id": video_id,
            "source": str(source),
            "reason": str(reason),
            "time": _dt.datetime.now(_dt.timezone.utc).isoformat(timespec="seconds"),
        }
        zarr.open_group(tmp, mode="w", attributes=attrs)
        dst = self.path / "failures" / key
        shutil.rmtree(dst, ignore_errors=True)
        os.rename(tmp, dst)

    def _publish(self, video_id: str, key: str, tmp: Path) -> None:
        self._require_claim(video_id, key)
        _fsync_tree(tmp)
        dst = self.path / "videos" / key
        try:
            os.rename(tmp, dst)
        except OSError as exc:
            raise StoreError(f"cannot publish video {video_id!r} to {dst}: {exc}") from exc
        _fsync_path(dst.parent)
        shutil.rmtree(self.path / "failures" / key, ignore_errors=True)
