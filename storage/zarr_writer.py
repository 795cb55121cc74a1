"""Writing one claimed video of a Zarr activation store, and the whole-video shortcut.

`VideoWriter` creates the video's arrays (``layer_XX`` [T, cells, C] in the store dtype, named
features [T, C] float32, all with the store codec `COMPRESSOR`) as a standalone group under
``_tmp/<key>/`` (in `prepare`, on the first write at the latest), takes row blocks in any order with full validation, and `commit` writes the step
times and attrs and publishes the group atomically through its store.  `write_video` claims,
writes and commits a whole in-memory video in one call.
"""

from __future__ import annotations

import shutil
from collections.abc import Mapping, Sequence
from typing import TYPE_CHECKING, Any

import numpy as np
import zarr
from zarr.codecs import BloscCodec

from storage.codecs import STORE_DTYPES, encode_rows
from storage.errors import StoreError
from storage.features import FEATURE_DTYPE, feature_array_name
from storage.keys import layer_name
from storage.provenance import _jsonable

if TYPE_CHECKING:
    from storage.zarr_store import ZarrActivationStore

__all__ = ["COMPRESSOR", "VideoWriter", "write_video"]

#: Codec of every array: Blosc zstd level 5 with byte shuffle (good for float16/bfloat16 bits).
COMPRESSOR = BloscCodec(cname="zstd", clevel=5, shuffle="shuffle")


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
        self._chunk_steps = int(chunk_steps)
        self._names = dict(zip(layer_list, names, strict=True))
        self.features = {str(k): int(v) for k, v in sorted((features or {}).items())}
        for name, width in self.features.items():
            if width < 1:
                raise self._error(f"feature {name!r}: channels must be >= 1, got {width}")
        self._group: zarr.Group | None = None
        self._arrays: dict[int | str, zarr.Array] = {}
        self._written = {k: np.zeros(self.num_steps, dtype=bool) for k in [*layer_list, *self.features]}
        self.state = "open"

    def prepare(self) -> None:
        """Create the video's group and arrays under ``_tmp/<key>`` (replacing leftovers of an
        interrupted run).  Idempotent; `write` and `commit` call it first.  Calling it early from
        the thread that will write (extraction's writer thread) keeps its metadata writes off the
        caller's path."""
        self._check_open()
        if self._group is not None:
            return
        shutil.rmtree(self.tmp, ignore_errors=True)
        group = zarr.open_group(self.tmp, mode="w")
        chunk = min(self._chunk_steps, self.num_steps)
        for layer, name in self._names.items():
            self._arrays[layer] = group.create_array(
                name,
                shape=(self.num_steps, self.cells, self.channels),
                chunks=(chunk, self.cells, self.channels),
                dtype=STORE_DTYPES[self.dtype],
                compressors=COMPRESSOR,
                fill_value=0,
                attributes={"dtype": self.dtype, "layer": layer},
            )
        for name, width in self.features.items():
            self._arrays[name] = group.create_array(
                feature_array_name(name),
                shape=(self.num_steps, width),
                chunks=(chunk, width),
                dtype=STORE_DTYPES[FEATURE_DTYPE],
                compressors=COMPRESSOR,
                fill_value=0,
                attributes={"dtype": FEATURE_DTYPE, "feature": name},
            )
        self._group = group

    def write(self, t0: int, arrays: Mapping[int | str, np.ndarray]) -> None:
        """Write rows ``t0:t0+n`` of every layer and feature; `arrays` = {layer: [n, cells, C] float
        (or uint16 bfloat16 bits), feature name: [n, C] float}, the same n for every array."""
        self.prepare()
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
        self.prepare()
        assert self._group is not None
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
