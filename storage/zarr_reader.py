"""Reading a Zarr activation store: `ZarrReader`, the Zarr backend of `ActivationReader`.

It lists the published videos (``videos/<key>/`` with a ``zarr.json``), their layer and feature
arrays, step times and the failure log, and provides only those primitives: argument checks,
dtype decoding and summaries are the shared `ActivationReader`'s.  Published videos are
immutable, so their metadata, times and open arrays are cached.
"""

from __future__ import annotations

import os
from pathlib import Path
from typing import Any

import numpy as np
import zarr

from storage.errors import NotAStoreError
from storage.features import feature_array_name, parse_feature_name
from storage.keys import layer_name, parse_layer_name
from storage.provenance import check_root_attrs
from storage.reader import ActivationReader, ArrayMeta

__all__ = ["ZarrReader"]


def _group_attrs(path: Path) -> dict:
    return zarr.open_group(path, mode="r").attrs.asdict()


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
