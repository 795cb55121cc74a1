"""Where a dataset's features come from: the requested layers and named features are checked against
the store (`check_layers`, `check_features`), the RAM cache is decided (`resolve_cache`, ``"auto"``
by `cache_bytes`), and `_FeatureSource` reads step ranges of a video as float32 tensors — cell means
or whole-video resampling applied — from the store or the cache.
"""
from __future__ import annotations

from typing import Any, Sequence

import numpy as np
import torch

from stages.data.resample import resample_features
from stages.errors import StageError


class _FeatureSource:
    """Reads layer slices from the store, optionally caching whole videos in RAM; with
    ``resample > 0`` every video is first resampled to that many steps (whole-video read).

    Layers in ``mean_layers`` are returned as their mean over cells, ``[T, 1, C]`` (what a model
    that only uses the cell mean of a layer needs; the cache then holds 1/cells of the data).
    Named stored ``features`` (e.g. ``"fc_norm"``, [T, C] in the store) come under their name as
    ``[T, 1, C]``, like a cell mean."""

    def __init__(self, reader: Any, layers: Sequence[int], cache: bool, resample: int = 0,
                 mean_layers: Sequence[int] = (), features: Sequence[str] = ()) -> None:
        self.reader = reader
        self.layers = list(layers)
        self.features = list(features)
        self.keys: list[int | str] = [*self.layers, *self.features]
        self.mean_layers = {int(x) for x in mean_layers}
        # mean layers whose cell mean the store holds (`cellmean_XX` in every video): read that
        from storage.features import cell_mean_feature

        stored = set(reader.features()) if hasattr(reader, "features") else set()
        self.stored_means = {k: cell_mean_feature(k) for k in self.mean_layers
                             if cell_mean_feature(k) in stored}
        self.cache: dict[str, dict[int, np.ndarray]] | None = {} if cache else None
        self.resample = int(resample)

    def _load(self, video_id: str, t0: int = 0, t1: int | None = None) -> dict[int, np.ndarray]:
        from_cells = [k for k in self.layers if k not in self.stored_means]
        arrays = self.reader.read(video_id, from_cells, t0, t1) if from_cells else {}
        out: dict = {k: (v.mean(axis=1, keepdims=True, dtype=np.float32) if k in self.mean_layers
                         else np.ascontiguousarray(v, dtype=np.float32)) for k, v in arrays.items()}
        for k, name in self.stored_means.items():
            out[k] = np.ascontiguousarray(self.reader.read_feature(video_id, name, t0, t1)[:, None, :],
                                          dtype=np.float32)
        for name in self.features:
            out[name] = np.ascontiguousarray(self.reader.read_feature(video_id, name, t0, t1)[:, None, :],
                                             dtype=np.float32)
        return out

    def read(self, video_id: str, t0: int, t1: int) -> dict[int, torch.Tensor]:
        if self.resample:
            whole = self.cache.get(video_id) if self.cache is not None else None
            if whole is None:
                whole = {k: resample_features(v, self.resample) for k, v in self._load(video_id).items()}
                if self.cache is not None:
                    self.cache[video_id] = whole
            return {k: torch.from_numpy(np.array(whole[k][t0:t1], dtype=np.float32)) for k in self.keys}
        if self.cache is not None:
            if video_id not in self.cache:
                self.cache[video_id] = self._load(video_id)
            arrays = {k: v[t0:t1] for k, v in self.cache[video_id].items()}
            return {k: torch.from_numpy(np.array(arrays[k], dtype=np.float32)) for k in self.keys}
        arrays = self._load(video_id, t0, t1)  # freshly decoded float32: no further copy
        return {k: torch.from_numpy(arrays[k]) for k in self.keys}


def cache_bytes(reader: Any, video_ids: Sequence[str], layers: Sequence[int],
                mean_layers: Sequence[int] = ()) -> int:
    """float32 bytes that caching these videos' layers would hold (mean layers: one cell)."""
    means = {int(x) for x in mean_layers}
    total = 0
    for vid in video_ids:
        shapes = reader.layer_shapes(vid)
        for layer in layers:
            steps, cells, channels = shapes[int(layer)]
            total += steps * (1 if int(layer) in means else cells) * channels * 4
    return total


def resolve_cache(cache: bool | str, reader: Any, video_ids: Sequence[str], layers: Sequence[int],
                  mean_layers: Sequence[int] = (), cache_max_mb: float = 2048.0) -> bool:
    """``cache`` True/False as given; ``"auto"``: cache when the data fits in ``cache_max_mb``."""
    if cache == "auto":
        return cache_bytes(reader, video_ids, layers, mean_layers) <= cache_max_mb * 2**20
    if isinstance(cache, bool):
        return cache
    raise StageError(f"cache must be true, false or 'auto', got {cache!r}")


def check_features(reader: Any, features: Sequence[str]) -> list[str]:
    """The requested named features (e.g. ``fc_norm``), verified to exist for every stored video."""
    stored = set(reader.features()) if hasattr(reader, "features") else set()
    bad = [str(x) for x in features if str(x) not in stored]
    if bad:
        raise StageError(f"feature(s) {bad} not in the store {getattr(reader, 'path', '')} (stored: "
                         f"{sorted(stored) or 'none'}); extract with reference_feature: true "
                         "(--reference-feature) to store fc_norm")
    return [str(x) for x in features]


def check_layers(reader: Any, layers: Sequence[int]) -> list[int]:
    """The requested layers, verified to exist in the store."""
    stored = set(int(x) for x in reader.layers())
    bad = [int(x) for x in layers if int(x) not in stored]
    if bad:
        raise StageError(f"layer(s) {bad} not in the store (stored: {sorted(stored)})")
    if not layers:
        raise StageError("no layers requested")
    return [int(x) for x in layers]

