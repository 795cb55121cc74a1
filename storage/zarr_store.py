"""Zarr v3 activation store: crash-safe, multi-process writer and the Zarr reader (DESIGN.md §2).

Crash safety: a video is written as a standalone Zarr group under ``_tmp/<key>/`` and published by
one ``os.rename`` to ``videos/<key>/``. Zarr v3 finds a group's children by listing the directory
(the ``videos`` group's own ``zarr.json`` never changes), so readers see either nothing or a
complete video. Concurrency: ``claim()`` holds ``flock(LOCK_EX | LOCK_NB)`` on
``_locks/<key>.lock`` (released by the kernel if the process dies); store creation is serialised by
a blocking flock on ``_locks/_store.lock``. Intended for local (POSIX) file systems.
"""

from __future__ import annotations

import datetime as _dt
import fcntl
import os
import shutil
from collections.abc import Iterator, Mapping, Sequence
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import numpy as np
import zarr
from zarr.codecs import BloscCodec

from storage.features import FEATURE_DTYPE, feature_array_name, parse_feature_name
from storage.keys import layer_name, parse_layer_name, safe_key
from storage.reader import (
    FORMAT,
    FORMAT_VERSION,
    STORE_DTYPES,
    ActivationReader,
    ArrayMeta,
    NotAStoreError,
    StoreError,
    StoreNotWritable,
    _jsonable,
    check_provenance,
    check_root_attrs,
    encode_rows,
)

__all__ = ["ZarrActivationStore", "VideoWriter", "ZarrReader", "write_video", "COMPRESSOR"]

#: Codec of every array: Blosc zstd level 5 with byte shuffle (good for float16/bfloat16 bits).
COMPRESSOR = BloscCodec(cname="zstd", clevel=5, shuffle="shuffle")
_SUBGROUPS = ("videos", "failures", "_tmp", "_locks")
_STORE_LOCK = "_store.lock"  # keys never start with "_", so this cannot clash with a claim


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


def _group_attrs(path: Path) -> dict:
    return zarr.open_group(path, mode="r").attrs.asdict()


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


class VideoWriter:
    """Writes one claimed video under ``_tmp/<key>``; :meth:`commit` publishes it atomically."""

    def __init__(
        self,
        store: ZarrActivationStore,
        video_id: str,
        key: str,
        layers: Sequence[int],
        cells: int,
        channels: int,
        num_steps: int,
        dtype: str,
        chunk_steps: int,
        features: Mapping[str, int] | None = None,
    ) -> None:
        self.store, self.video_id, self.key = store, video_id, key
        layer_list = [int(x) for x in layers]
        names = [layer_name(x) for x in layer_list]
        if not layer_list or len(set(layer_list)) != len(layer_list):
            raise self._error(f"layers must be non-empty and unique: {layer_list}")
        sizes = {"cells": cells, "channels": channels, "num_steps": num_steps, "chunk_steps": chunk_steps}
        for what, value in sizes.items():
            if int(value) < 1:
                raise self._error(f"{what} must be >= 1, got {value}")
        if dtype not in STORE_DTYPES:
            raise self._error(f"unknown store dtype {dtype!r}; expected one of {sorted(STORE_DTYPES)}")
        self.layers, self.dtype = sorted(layer_list), dtype
        self.cells, self.channels, self.num_steps = int(cells), int(channels), int(num_steps)
        self.tmp = store.path / "_tmp" / key
        shutil.rmtree(self.tmp, ignore_errors=True)
        self._group = zarr.open_group(self.tmp, mode="w")
        chunks = (min(int(chunk_steps), self.num_steps), self.cells, self.channels)
        self._arrays = {
            layer: self._group.create_array(
                name,
                shape=(self.num_steps, self.cells, self.channels),
                chunks=chunks,
                dtype=STORE_DTYPES[dtype],
                compressors=COMPRESSOR,
                fill_value=0,
                attributes={"dtype": dtype, "layer": layer},
            )
            for layer, name in zip(layer_list, names, strict=True)
        }
        self.features = {str(k): int(v) for k, v in sorted((features or {}).items())}
        for name, width in self.features.items():
            if width < 1:
                raise self._error(f"feature {name!r}: channels must be >= 1, got {width}")
            self._arrays[name] = self._group.create_array(
                feature_array_name(name),
                shape=(self.num_steps, width),
                chunks=(min(int(chunk_steps), self.num_steps), width),
                dtype=STORE_DTYPES[FEATURE_DTYPE],
                compressors=COMPRESSOR,
                fill_value=0,
                attributes={"dtype": FEATURE_DTYPE, "feature": name},
            )
        self._written = {k: np.zeros(self.num_steps, dtype=bool) for k in [*layer_list, *self.features]}
        self.state = "open"

    def write(self, t0: int, arrays: Mapping[int | str, np.ndarray]) -> None:
        """Write rows ``t0:t0+n`` of every layer and feature; `arrays` = {layer: [n, cells, C] float
        (or uint16 bfloat16 bits), feature name: [n, C] float}, the same n for every array."""
        self._check_open()
        got_layers = sorted(k for k in arrays if not isinstance(k, str))
        got_features = sorted(k for k in arrays if isinstance(k, str))
        if got_layers != self.layers:
            raise self._error(f"write() needs exactly layers {self.layers}, got {got_layers}")
        if got_features != list(self.features):
            raise self._error(f"write() needs exactly features {list(self.features)}, got {got_features}")
        lengths = {len(np.asarray(a)) for a in arrays.values()}
        if len(lengths) != 1:
            raise self._error(f"layers have different row counts {sorted(lengths)}")
        n, t0 = lengths.pop(), int(t0)
        if t0 < 0 or t0 + n > self.num_steps:
            raise self._error(f"rows {t0}:{t0 + n} out of range 0:{self.num_steps}")
        encoded: dict[int | str, np.ndarray] = {}
        for layer in self.layers:
            arr = np.asarray(arrays[layer])
            if arr.shape != (n, self.cells, self.channels):
                want = (n, self.cells, self.channels)
                raise self._error(f"layer {layer}: expected shape {want}, got {arr.shape}")
            encoded[layer] = encode_rows(arr, self.dtype, f"video {self.video_id!r} layer {layer}")
        for name, width in self.features.items():
            arr = np.asarray(arrays[name])
            if arr.shape != (n, width):
                raise self._error(f"feature {name!r}: expected shape {(n, width)}, got {arr.shape}")
            encoded[name] = encode_rows(arr, FEATURE_DTYPE, f"video {self.video_id!r} feature {name!r}")
        for k, rows in encoded.items():
            self._arrays[k][t0 : t0 + n] = rows
            self._written[k][t0 : t0 + n] = True

    def commit(self, times: np.ndarray, attrs: Mapping[str, Any] | None = None) -> None:
        """Write `times` (float64 [T], strictly increasing) and the group attrs, then publish."""
        self._check_open()
        for k, done in self._written.items():
            if not done.all():
                what = f"feature {k!r}" if isinstance(k, str) else f"layer {k}"
                raise self._error(f"{what}: step {int(np.argmin(done))} was never written")
        t = np.asarray(times, dtype=np.float64)
        if t.shape != (self.num_steps,):
            raise self._error(f"times must have shape ({self.num_steps},), got {t.shape}")
        if not np.isfinite(t).all() or (t.size > 1 and not (np.diff(t) > 0).all()):
            raise self._error("times must be finite and strictly increasing")
        meta = {"video_id": self.video_id, "source": "", "fps": None, "num_frames": None,
                "duration": None, "num_steps": self.num_steps, "extra": {}}
        given = _jsonable(dict(attrs or {}), f"attrs of video {self.video_id!r}")
        for fixed in ("video_id", "num_steps"):
            if fixed in given and given[fixed] != meta[fixed]:
                raise self._error(f"attr {fixed}={given[fixed]!r} contradicts {meta[fixed]!r}")
        meta.update(given)
        self._group.create_array("times", data=t, chunks=(self.num_steps,), compressors=COMPRESSOR)
        self._group.attrs.update(meta)
        self.store._publish(self.video_id, self.key, self.tmp)
        self.state = "committed"

    def abort(self) -> None:
        """Discard everything written so far."""
        if self.state == "open":
            shutil.rmtree(self.tmp, ignore_errors=True)
            self.state = "aborted"

    def _check_open(self) -> None:
        if self.state != "open":
            raise self._error(f"writer is already {self.state}")

    def _error(self, message: str) -> StoreError:
        return StoreError(f"video {self.video_id!r}: {message}")

    def __enter__(self) -> VideoWriter:
        return self

    def __exit__(self, exc_type: object, *exc: object) -> None:
        if self.state == "open":
            self.abort()


def write_video(
    store: ZarrActivationStore,
    video_id: str,
    arrays: Mapping[int, np.ndarray],
    times: np.ndarray,
    attrs: Mapping[str, Any] | None = None,
    chunk_steps: int = 256,
    dtype: str = "float16",
    features: Mapping[str, np.ndarray] | None = None,
) -> bool:
    """Claim, write and commit one whole video ({layer: [T, cells, C]}, optional named `features`
    {name: [T, C]}); False if it was already complete or claimed elsewhere."""
    if not arrays:
        raise StoreError(f"video {video_id!r}: no layers given")
    first = np.asarray(next(iter(arrays.values())))
    if first.ndim != 3:
        raise StoreError(f"video {video_id!r}: arrays must be [T, cells, C], got shape {first.shape}")
    steps, cells, channels = first.shape
    with store.claim(video_id) as mine:
        if not mine:
            return False
        feats = {str(k): np.asarray(v) for k, v in (features or {}).items()}
        with store.begin_video(
            video_id, layers=list(arrays), cells=cells, channels=channels, num_steps=steps,
            dtype=dtype, chunk_steps=chunk_steps,
            features={k: (v.shape[-1] if v.ndim == 2 else 0) for k, v in feats.items()},
        ) as writer:
            writer.write(0, {**arrays, **feats})
            writer.commit(times, attrs)
    return True


class ZarrReader(ActivationReader):
    """Reader of a Zarr activation store. Metadata of published videos (immutable) is cached."""

    def __init__(self, path: str | Path) -> None:
        self.path = Path(path)
        if not (self.path / "zarr.json").is_file():
            raise NotAStoreError(f"not a LoSA activation store (no zarr.json): {self.path}")
        self._attrs = _group_attrs(self.path)
        check_root_attrs(self._attrs, self.path)
        self._meta: dict[str, dict[int, ArrayMeta]] = {}
        self._info: dict[str, dict] = {}
        self._times: dict[str, np.ndarray] = {}
        self._open: dict[tuple[str, int | str], Any] = {}
        self._feature_cache: dict[str, dict[str, ArrayMeta]] = {}

    def _root_attrs(self) -> dict:
        return self._attrs

    def _complete_keys(self) -> list[str]:
        base = self.path / "videos"
        try:
            names = os.listdir(base)
        except FileNotFoundError:
            return []
        return sorted(n for n in names if not n.startswith(".") and (base / n / "zarr.json").is_file())

    def _has_key(self, key: str) -> bool:
        return key in self._info or (self.path / "videos" / key / "zarr.json").is_file()

    def _video_attrs(self, key: str) -> dict:
        if key not in self._info:
            self._info[key] = _group_attrs(self.path / "videos" / key)
        return dict(self._info[key])

    def _layer_meta(self, key: str) -> dict[int, ArrayMeta]:
        if key not in self._meta:
            base = self.path / "videos" / key
            meta = {}
            for name in os.listdir(base):
                layer = parse_layer_name(name)
                if layer is None or not (base / name / "zarr.json").is_file():
                    continue
                arr = self._array(key, layer)
                meta[layer] = ArrayMeta(tuple(arr.shape), str(arr.attrs.get("dtype", arr.dtype)))
            self._meta[key] = meta
        return self._meta[key]

    def _array(self, key: str, layer: int | str) -> Any:
        if (key, layer) not in self._open:
            name = feature_array_name(layer) if isinstance(layer, str) else layer_name(layer)
            self._open[(key, layer)] = zarr.open_array(self.path / "videos" / key / name, mode="r")
        return self._open[(key, layer)]

    def _read_layer(self, key: str, layer: int, t0: int, t1: int) -> np.ndarray:
        return np.asarray(self._array(key, layer)[t0:t1])

    def _feature_meta(self, key: str) -> dict[str, ArrayMeta]:
        if key not in self._feature_cache:
            base = self.path / "videos" / key
            meta = {}
            for array in os.listdir(base):
                name = parse_feature_name(array)
                if name is None or not (base / array / "zarr.json").is_file():
                    continue
                arr = self._array(key, name)
                meta[name] = ArrayMeta(tuple(arr.shape), str(arr.attrs.get("dtype", arr.dtype)))
            self._feature_cache[key] = meta
        return self._feature_cache[key]

    def _read_feature(self, key: str, name: str, t0: int, t1: int) -> np.ndarray:
        return np.asarray(self._array(key, name)[t0:t1])

    def _read_times(self, key: str) -> np.ndarray:
        if key not in self._times:
            self._times[key] = np.asarray(
                zarr.open_array(self.path / "videos" / key / "times", mode="r")[:], dtype=np.float64
            )
        return self._times[key]

    def _failure_attrs(self) -> list[dict]:
        base = self.path / "failures"
        try:
            names = os.listdir(base)
        except FileNotFoundError:
            return []
        return [
            _group_attrs(base / n) for n in sorted(names) if (base / n / "zarr.json").is_file()
        ]

    def bytes_on_disk(self) -> int:
        total = 0
        for dirpath, _dirs, files in os.walk(self.path):
            for name in files:
                try:
                    total += os.lstat(os.path.join(dirpath, name)).st_size
                except FileNotFoundError:  # a concurrent writer renamed/removed it
                    pass
        return total
