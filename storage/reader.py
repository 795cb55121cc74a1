"""Backend-independent reader API and `open_store`.

`ActivationReader` implements the public reader API (DESIGN.md §2) on top of a handful of
backend primitives; `ZarrReader` and `HDF5Reader` only provide those primitives, so both backends
validate arguments, decode dtypes and summarise identically.  The errors (`errors.py`), dtype
codecs (`codecs.py`) and format / provenance checks (`provenance.py`) are re-exported here.
"""

from __future__ import annotations

import math
from abc import ABC, abstractmethod
from collections.abc import Iterable
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from storage.codecs import STORE_DTYPES, decode_rows, encode_rows
from storage.errors import (
    NotAStoreError,
    ProvenanceMismatch,
    StoreError,
    StoreNotWritable,
    UnknownFeatureError,
    UnknownLayerError,
    UnknownVideoError,
)
from storage.keys import safe_key, unsafe_key
from storage.provenance import FORMAT, FORMAT_VERSION, check_provenance, check_root_attrs

__all__ = [
    "FORMAT",
    "FORMAT_VERSION",
    "STORE_DTYPES",
    "StoreError",
    "NotAStoreError",
    "UnknownVideoError",
    "UnknownLayerError",
    "UnknownFeatureError",
    "ProvenanceMismatch",
    "StoreNotWritable",
    "ArrayMeta",
    "ActivationReader",
    "check_provenance",
    "check_root_attrs",
    "encode_rows",
    "decode_rows",
    "open_store",
]


@dataclass(frozen=True)
class ArrayMeta:
    """Shape and store dtype name of one stored layer array."""

    shape: tuple[int, ...]
    dtype: str

    @property
    def nbytes(self) -> int:
        """Uncompressed size of the stored array in bytes."""
        return math.prod(self.shape) * STORE_DTYPES[self.dtype].itemsize


class ActivationReader(ABC):
    """Read-only view of a store; every method deals in original video ids."""

    path: Path

    # ---- backend primitives -------------------------------------------------------------------
    @abstractmethod
    def _root_attrs(self) -> dict: ...

    @abstractmethod
    def _complete_keys(self) -> list[str]: ...

    @abstractmethod
    def _has_key(self, key: str) -> bool: ...

    @abstractmethod
    def _video_attrs(self, key: str) -> dict: ...

    @abstractmethod
    def _layer_meta(self, key: str) -> dict[int, ArrayMeta]: ...

    @abstractmethod
    def _read_layer(self, key: str, layer: int, t0: int, t1: int) -> np.ndarray: ...

    @abstractmethod
    def _read_times(self, key: str) -> np.ndarray: ...

    @abstractmethod
    def _failure_attrs(self) -> list[dict]: ...

    @abstractmethod
    def bytes_on_disk(self) -> int:
        """Size in bytes of every file belonging to the store."""

    def _feature_meta(self, key: str) -> dict[str, ArrayMeta]:
        """{name: meta} of the named feature arrays of a video (storage/features.py); none here."""
        return {}

    def _read_feature(self, key: str, name: str, t0: int, t1: int) -> np.ndarray:
        raise UnknownFeatureError(f"feature {name!r} not stored")

    # ---- public API ---------------------------------------------------------------------------
    @property
    def provenance(self) -> dict:
        """The provenance dict recorded when the store was created."""
        return dict(self._root_attrs().get("provenance") or {})

    def videos(self) -> list[str]:
        """Original ids of the complete videos, sorted."""
        ids = []
        for key in self._complete_keys():
            try:
                ids.append(unsafe_key(key))
            except ValueError:  # e.g. a file system that re-normalised the name
                ids.append(str(self._video_attrs(key)["video_id"]))
        return sorted(ids)

    def __contains__(self, video_id: object) -> bool:
        try:
            return isinstance(video_id, str) and self._has_key(safe_key(video_id))
        except ValueError:
            return False

    def __len__(self) -> int:
        return len(self._complete_keys())

    def layers(self) -> list[int]:
        """Layers present in every complete video (sorted); [] for an empty store."""
        common: set[int] | None = None
        for key in self._complete_keys():
            have = set(self._layer_meta(key))
            common = have if common is None else common & have
        return sorted(common or ())

    def video_info(self, video_id: str) -> dict:
        """The video's group attrs (video_id, source, fps, num_frames, duration, num_steps, extra, ...)."""
        return self._video_attrs(self._key(video_id))

    def num_steps(self, video_id: str) -> int:
        """Number of feature steps T stored for `video_id`."""
        return len(self._read_times(self._key(video_id)))

    def times(self, video_id: str) -> np.ndarray:
        """float64 [T] centre time in seconds of every step."""
        return np.asarray(self._read_times(self._key(video_id)), dtype=np.float64)

    def layer_shapes(self, video_id: str) -> dict[int, tuple[int, ...]]:
        """{layer: (T, cells, C)} as stored for `video_id`."""
        return {k: m.shape for k, m in sorted(self._layer_meta(self._key(video_id)).items())}

    def features(self) -> list[str]:
        """Named features (e.g. ``fc_norm``) present in every complete video; [] when none."""
        common: set[str] | None = None
        for key in self._complete_keys():
            have = set(self._feature_meta(key))
            common = have if common is None else common & have
        return sorted(common or ())

    def feature_shapes(self, video_id: str) -> dict[str, tuple[int, ...]]:
        """{name: (T, C)} of the named features stored for `video_id`."""
        return {k: m.shape for k, m in sorted(self._feature_meta(self._key(video_id)).items())}

    def read_feature(self, video_id: str, name: str, t0: int = 0, t1: int | None = None) -> np.ndarray:
        """float32 [t1-t0, C] of the named feature `name` for steps t0:t1."""
        key = self._key(video_id)
        meta = self._feature_meta(key)
        if name not in meta:
            raise UnknownFeatureError(
                f"feature {name!r} not stored for video {video_id!r} (stored: {sorted(meta) or 'none'}; "
                "extract with the reference feature to get fc_norm)"
            )
        steps = len(self._read_times(key))
        t1 = steps if t1 is None else t1
        if not (0 <= int(t0) <= int(t1) <= steps):
            raise StoreError(f"step range {t0}:{t1} out of bounds 0:{steps} for video {video_id!r}")
        return decode_rows(self._read_feature(key, name, int(t0), int(t1)), meta[name].dtype)

    def read(
        self,
        video_id: str,
        layers: Iterable[int] | int | None = None,
        t0: int = 0,
        t1: int | None = None,
    ) -> dict[int, np.ndarray]:
        """{layer: float32 [t1-t0, cells, C]} for steps t0:t1 (all stored layers by default)."""
        key = self._key(video_id)
        meta = self._layer_meta(key)
        if isinstance(layers, int):
            layers = [layers]
        wanted = sorted(meta) if layers is None else [int(x) for x in layers]
        for layer in wanted:
            if layer not in meta:
                raise UnknownLayerError(
                    f"layer {layer} not stored for video {video_id!r} (stored: {sorted(meta)})"
                )
        steps = len(self._read_times(key))
        t1 = steps if t1 is None else t1
        if not (0 <= int(t0) <= int(t1) <= steps):
            raise StoreError(f"step range {t0}:{t1} out of bounds 0:{steps} for video {video_id!r}")
        return {
            layer: decode_rows(self._read_layer(key, layer, int(t0), int(t1)), meta[layer].dtype)
            for layer in wanted
        }

    def failures(self) -> list[dict]:
        """Attrs of recorded failures whose video has not since been completed, sorted by id."""
        out = [a for a in self._failure_attrs() if not self._has_key(safe_key(str(a["video_id"])))]
        return sorted(out, key=lambda a: str(a["video_id"]))

    def summary(self) -> dict:
        """Counts, shapes and sizes: videos, layers, shapes {layer: [cells, C]}, features
        {name: [C]}, total_steps, dtypes, failures, bytes_on_disk, raw_bytes (uncompressed arrays
        incl. times) and compression_ratio (raw / on disk)."""
        keys = self._complete_keys()
        shapes: dict[int, list[int]] = {}
        feature_shapes: dict[str, list[int]] = {}
        dtypes: set[str] = set()
        total_steps = 0
        raw = 0
        for key in keys:
            steps = len(self._read_times(key))
            total_steps += steps
            raw += steps * 8
            for layer, meta in self._layer_meta(key).items():
                shapes.setdefault(layer, list(meta.shape[1:]))
                dtypes.add(meta.dtype)
                raw += meta.nbytes
            for name, meta in self._feature_meta(key).items():
                feature_shapes.setdefault(name, list(meta.shape[1:]))
                raw += meta.nbytes
        disk = self.bytes_on_disk()
        return {
            "path": str(self.path),
            "videos": len(keys),
            "layers": self.layers(),
            "shapes": {layer: shapes[layer] for layer in sorted(shapes)},
            "features": {name: feature_shapes[name] for name in sorted(feature_shapes)},
            "dtypes": sorted(dtypes),
            "total_steps": total_steps,
            "failures": len(self.failures()),
            "bytes_on_disk": disk,
            "raw_bytes": raw,
            "compression_ratio": (raw / disk) if disk else 0.0,
        }

    def close(self) -> None:
        """Release any open file handle (no-op for backends without one)."""
        return None

    def __enter__(self) -> ActivationReader:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def __repr__(self) -> str:
        return f"{type(self).__name__}({str(self.path)!r})"

    # ---- helpers ------------------------------------------------------------------------------
    def _key(self, video_id: str) -> str:
        try:
            key = safe_key(video_id)
        except ValueError as exc:
            raise UnknownVideoError(f"video {video_id!r} not in store {self.path}: {exc}") from exc
        if not self._has_key(key):
            raise UnknownVideoError(f"video {video_id!r} not in store {self.path}")
        return key

def open_store(path: str | Path) -> ActivationReader:
    """Open a store for reading: a Zarr directory or an HDF5 (.h5/.hdf5) file."""
    p = Path(path)
    if not p.exists():
        raise FileNotFoundError(f"activation store not found: {p}")
    if p.is_dir():
        from storage.zarr_store import ZarrReader

        if not (p / "zarr.json").is_file():
            raise NotAStoreError(f"not a LoSA activation store (no zarr.json): {p}")
        return ZarrReader(p)
    import h5py

    if h5py.is_hdf5(p):
        from storage.hdf5_store import HDF5Reader

        return HDF5Reader(p)
    raise NotAStoreError(f"not a LoSA activation store (neither a Zarr directory nor HDF5): {p}")
