"""Single-file HDF5 copy of an activation store: `convert_store` and `HDF5Reader`.

Layout mirrors the Zarr store (``videos/<key>/{times, layer_XX}``, ``failures/<key>``). Root attrs:
``format``, ``format_version`` and ``provenance`` (a JSON string). Every group's full attrs dict is
kept exactly as JSON in the attr ``attrs_json``; its scalar entries are also written as native HDF5
attrs so that generic HDF5 tools show them. Layer datasets keep the stored dtype (bfloat16 as uint16
bits with attr ``dtype="bfloat16"``).
"""

from __future__ import annotations

import json
import os
from pathlib import Path
from typing import Any

import h5py
import numpy as np

from storage.atomic import atomic_path
from storage.features import feature_array_name, parse_feature_name
from storage.keys import layer_name, parse_layer_name, safe_key
from storage.reader import (
    FORMAT,
    FORMAT_VERSION,
    STORE_DTYPES,
    ActivationReader,
    ArrayMeta,
    NotAStoreError,
    StoreError,
    check_root_attrs,
)

__all__ = ["convert_store", "HDF5Reader"]

_COMPRESSIONS = ("gzip", "lzf", "none")


def _put_attrs(obj: h5py.HLObject, attrs: dict) -> None:
    obj.attrs["attrs_json"] = json.dumps(attrs, sort_keys=True)
    for name, value in attrs.items():
        if isinstance(value, (str, bool, int, float)) and name != "attrs_json":
            obj.attrs[name] = value


def _get_attrs(obj: h5py.HLObject) -> dict:
    raw = obj.attrs.get("attrs_json")
    if raw is None:
        return {k: v for k, v in obj.attrs.items()}
    return json.loads(raw)


def convert_store(
    reader: ActivationReader,
    dst_path: str | Path,
    compression: str = "gzip",
    compression_level: int = 4,
    chunk_steps: int = 256,
    overwrite: bool = False,
) -> Path:
    """Copy every complete video and failure record of `reader` into one HDF5 file.

    `compression` is "gzip" (level `compression_level`), "lzf" or "none"; byte shuffle is on for
    compressed datasets. The file is written next to `dst_path` and moved into place with
    ``os.replace``, so `dst_path` is either absent/old or a complete new file.
    """
    if compression not in _COMPRESSIONS:
        raise StoreError(f"unknown HDF5 compression {compression!r}; expected one of {_COMPRESSIONS}")
    if int(chunk_steps) < 1:
        raise StoreError(f"chunk_steps must be >= 1, got {chunk_steps}")
    dst = Path(dst_path)
    if dst.exists() and not overwrite:
        raise StoreError(f"HDF5 file already exists: {dst}; pass --overwrite to replace it")
    if dst.is_dir():
        raise StoreError(f"HDF5 destination is a directory: {dst}")
    dst.parent.mkdir(parents=True, exist_ok=True)
    filt: dict[str, Any] = {}
    if compression == "gzip":
        filt = {"compression": "gzip", "compression_opts": int(compression_level), "shuffle": True}
    elif compression == "lzf":
        filt = {"compression": "lzf", "shuffle": True}
    with atomic_path(dst, mkdir=False) as tmp:
        with h5py.File(tmp, "w") as f:
            f.attrs["format"] = FORMAT
            f.attrs["format_version"] = FORMAT_VERSION
            f.attrs["provenance"] = json.dumps(reader.provenance, sort_keys=True)
            f.attrs["converted_from"] = str(reader.path)
            videos = f.create_group("videos")
            for video_id in reader.videos():
                _copy_video(reader, videos, video_id, int(chunk_steps), filt)
            failures = f.create_group("failures")
            for rec in reader.failures():
                _put_attrs(failures.create_group(safe_key(str(rec["video_id"]))), rec)
    return dst


def _copy_video(
    reader: ActivationReader, videos: h5py.Group, video_id: str, chunk_steps: int, filt: dict
) -> None:
    key = reader._key(video_id)
    g = videos.create_group(key)
    _put_attrs(g, reader.video_info(video_id))
    times = reader.times(video_id)
    g.create_dataset("times", data=times, dtype=np.float64)
    steps = len(times)
    for layer, meta in sorted(reader._layer_meta(key).items()):
        shape = meta.shape
        chunks = (min(chunk_steps, shape[0]), *shape[1:]) if filt else None
        ds = g.create_dataset(
            layer_name(layer), shape=shape, dtype=STORE_DTYPES[meta.dtype], chunks=chunks, **filt
        )
        ds.attrs["dtype"] = meta.dtype
        ds.attrs["layer"] = layer
        block = max(chunk_steps, 1024 // chunk_steps * chunk_steps)
        for t0 in range(0, steps, block):
            t1 = min(steps, t0 + block)
            ds[t0:t1] = reader._read_layer(key, layer, t0, t1)
    for name, meta in sorted(reader._feature_meta(key).items()):
        chunks = (min(chunk_steps, meta.shape[0]), *meta.shape[1:]) if filt else None
        ds = g.create_dataset(feature_array_name(name), data=reader._read_feature(key, name, 0, steps),
                              dtype=STORE_DTYPES[meta.dtype], chunks=chunks, **filt)
        ds.attrs["dtype"] = meta.dtype
        ds.attrs["feature"] = name


class HDF5Reader(ActivationReader):
    """Reader of a store converted to HDF5; reopens its file handle after a fork."""

    def __init__(self, path: str | Path) -> None:
        self.path = Path(path)
        if not self.path.is_file():
            raise FileNotFoundError(f"HDF5 activation store not found: {self.path}")
        self._file: h5py.File | None = None
        self._pid = -1
        f = self._h5()
        attrs = {k: f.attrs[k] for k in ("format", "format_version") if k in f.attrs}
        attrs = {k: (v.item() if isinstance(v, np.generic) else v) for k, v in attrs.items()}
        check_root_attrs(attrs, self.path)
        try:
            attrs["provenance"] = json.loads(f.attrs.get("provenance", "{}"))
        except (TypeError, ValueError) as exc:
            raise NotAStoreError(f"corrupt provenance attr in HDF5 store: {self.path}") from exc
        self._attrs = attrs
        self._meta: dict[str, dict[int, ArrayMeta]] = {}

    def _h5(self) -> h5py.File:
        if self._file is None or self._pid != os.getpid():
            try:
                self._file = h5py.File(self.path, "r")
            except OSError as exc:
                raise NotAStoreError(f"cannot open HDF5 store {self.path}: {exc}") from exc
            self._pid = os.getpid()
        return self._file

    def close(self) -> None:
        if self._file is not None and self._pid == os.getpid():
            self._file.close()
        self._file = None

    def _root_attrs(self) -> dict:
        return self._attrs

    def _group(self, name: str) -> h5py.Group | None:
        g = self._h5().get(name)
        return g if isinstance(g, h5py.Group) else None

    def _complete_keys(self) -> list[str]:
        g = self._group("videos")
        return sorted(g.keys()) if g is not None else []

    def _has_key(self, key: str) -> bool:
        g = self._group("videos")
        return g is not None and key in g

    def _video_attrs(self, key: str) -> dict:
        return _get_attrs(self._h5()["videos"][key])

    def _layer_meta(self, key: str) -> dict[int, ArrayMeta]:
        if key not in self._meta:
            g = self._h5()["videos"][key]
            meta = {}
            for name, ds in g.items():
                layer = parse_layer_name(name)
                if layer is not None and isinstance(ds, h5py.Dataset):
                    dtype = ds.attrs.get("dtype", str(ds.dtype))
                    meta[layer] = ArrayMeta(tuple(ds.shape), str(dtype))
            self._meta[key] = meta
        return self._meta[key]

    def _read_layer(self, key: str, layer: int, t0: int, t1: int) -> np.ndarray:
        return self._h5()["videos"][key][layer_name(layer)][t0:t1]

    def _feature_meta(self, key: str) -> dict[str, ArrayMeta]:
        meta = {}
        for array, ds in self._h5()["videos"][key].items():
            name = parse_feature_name(array)
            if name is not None and isinstance(ds, h5py.Dataset):
                meta[name] = ArrayMeta(tuple(ds.shape), str(ds.attrs.get("dtype", str(ds.dtype))))
        return meta

    def _read_feature(self, key: str, name: str, t0: int, t1: int) -> np.ndarray:
        return self._h5()["videos"][key][feature_array_name(name)][t0:t1]

    def _read_times(self, key: str) -> np.ndarray:
        return self._h5()["videos"][key]["times"][()]

    def _failure_attrs(self) -> list[dict]:
        g = self._group("failures")
        return [_get_attrs(g[k]) for k in sorted(g.keys())] if g is not None else []

    def bytes_on_disk(self) -> int:
        return self.path.stat().st_size
