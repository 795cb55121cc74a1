"""Training / inference datasets reading activations lazily from an activation store: `StoreDataset`
(annotated videos of a subset; training items are random windows whose randomness is a pure function
of ``(seed, epoch, index)``, so data loading is reproducible across workers, ranks and resumes) and
`InferenceDataset` (whole videos). They compose `stages.data.geometry` (seconds ↔ steps),
`stages.data.records` (annotations → step coordinates), `stages.data.source` (feature reads and
cache) and `stages.data.batching` (windows, padding), whose public names are re-exported here.
"""
from __future__ import annotations

import logging
from typing import Any, Sequence

import numpy as np
import torch
from torch.utils.data import Dataset

from stages.data.batching import Collate, collate, length_sorted_batches, padded_length, truncate_window
from stages.data.geometry import StepGeometry, step_geometry
from stages.data.records import (AGNOSTIC_CLASS, MissingVideosError, VideoRecord, build_records, label_index,
                                 select_videos)
from stages.data.resample import resampled_geometry
from stages.data.source import _FeatureSource, cache_bytes, check_features, check_layers, resolve_cache
from stages.errors import StageError

__all__ = [
    "AGNOSTIC_CLASS", "Collate", "InferenceDataset", "MissingVideosError", "StepGeometry", "StoreDataset",
    "VideoRecord", "build_records", "cache_bytes", "check_features", "check_layers", "collate",
    "label_index", "length_sorted_batches", "padded_length", "resolve_cache", "select_videos",
    "step_geometry", "truncate_window",
]

log = logging.getLogger(__name__)


class _StoreFeatures(Dataset):
    """What both datasets share: the checked layers / named features to read, and their source."""

    def _select(self, reader: Any, layers: Sequence[int], features: Sequence[str]) -> None:
        self.features = check_features(reader, features)
        self.layers = check_layers(reader, layers) if (layers or not self.features) else []

    def _open_source(self, reader: Any, video_ids: Sequence[str], cache: bool | str, resample_steps: int,
                     mean_layers: Sequence[int], cache_max_mb: float) -> None:
        self.mean_layers = [x for x in self.layers if x in {int(m) for m in mean_layers}]
        self.cached = resolve_cache(cache, reader, video_ids, self.layers, self.mean_layers, cache_max_mb)
        self._source = _FeatureSource(reader, self.layers, self.cached, resample_steps, self.mean_layers,
                                      self.features)


class StoreDataset(_StoreFeatures):
    """Annotated videos of one subset; items are (windows of) their stored features + targets."""

    def __init__(
        self,
        reader: Any,
        annotations: Any,
        subset: str | Sequence[str] | None,
        layers: Sequence[int],
        max_seq_len: int = 2304,
        trunc_thresh: float = 0.5,
        crop_ratio: tuple[float, float] | None = (0.9, 1.0),
        training: bool = True,
        seed: int = 0,
        allow_missing: bool = False,
        cache: bool | str = False,
        resample_steps: int = 0,
        class_agnostic: bool = False,
        mean_layers: Sequence[int] = (),
        cache_max_mb: float = 2048.0,
        features: Sequence[str] = (),
    ) -> None:
        self._select(reader, layers, features)
        self.classes = [AGNOSTIC_CLASS] if class_agnostic else list(annotations.classes)
        records = build_records(reader, annotations, select_videos(annotations, subset), allow_missing,
                                resample_steps)
        if class_agnostic:  # every action is of the one class "action"
            for r in records:
                r.labels = np.zeros_like(r.labels)
        if training:
            empty = [r.video_id for r in records if len(r.segments) == 0]
            if empty:
                log.info("skipping %d training video(s) without actions", len(empty))
            records = [r for r in records if len(r.segments) > 0]
            if not records:
                raise StageError(f"no training videos with actions in subset {subset!r}")
        self.records = records
        self.max_seq_len = int(max_seq_len)
        self.trunc_thresh = float(trunc_thresh)
        self.crop_ratio = tuple(crop_ratio) if crop_ratio is not None else None
        self.training = training
        self.seed = int(seed)
        self.epoch = 0
        self._open_source(reader, [r.video_id for r in records], cache, resample_steps, mean_layers,
                          cache_max_mb)

    def set_epoch(self, epoch: int) -> None:
        """Select the random windows of this epoch (call before iterating a DataLoader)."""
        self.epoch = int(epoch)

    def __len__(self) -> int:
        return len(self.records)

    @property
    def lengths(self) -> list[int]:
        return [r.num_steps for r in self.records]

    def __getitem__(self, index: int) -> dict[str, Any]:
        rec = self.records[index]
        st, ed, segs, labels = 0, rec.num_steps, rec.segments, rec.labels
        if self.training:
            rng = np.random.default_rng([self.seed, self.epoch, index])
            st, ed, segs, labels = truncate_window(
                rec.segments, rec.labels, rec.num_steps, self.max_seq_len,
                self.trunc_thresh, rng, self.crop_ratio,
            )
        return {
            "video_id": rec.video_id,
            "feats": self._source.read(rec.video_id, st, ed),
            "segments": torch.as_tensor(np.asarray(segs, dtype=np.float32).reshape(-1, 2)),
            "labels": torch.as_tensor(np.asarray(labels, dtype=np.int64).reshape(-1)),
            "start": st,
            "num_steps": ed - st,
        }


class InferenceDataset(_StoreFeatures):
    """Whole videos (no annotations needed), for prediction."""

    def __init__(self, reader: Any, video_ids: Sequence[str], layers: Sequence[int], cache: bool | str = False,
                 resample_steps: int = 0, mean_layers: Sequence[int] = (), cache_max_mb: float = 2048.0,
                 features: Sequence[str] = ()) -> None:
        self._select(reader, layers, features)
        stored = set(reader.videos())
        missing = [v for v in video_ids if v not in stored]
        if missing:
            raise MissingVideosError(f"video(s) not in the store: {', '.join(missing[:10])}")
        self.video_ids = list(video_ids)
        self.geometries = [
            step_geometry(reader.times(v), v, reader.video_info(v).get("duration")) for v in self.video_ids
        ]
        if resample_steps:
            self.geometries = [resampled_geometry(g, resample_steps) for g in self.geometries]
        self._open_source(reader, self.video_ids, cache, resample_steps, mean_layers, cache_max_mb)

    def __len__(self) -> int:
        return len(self.video_ids)

    @property
    def lengths(self) -> list[int]:
        return [g.num_steps for g in self.geometries]

    def __getitem__(self, index: int) -> dict[str, Any]:
        vid, geo = self.video_ids[index], self.geometries[index]
        return {
            "video_id": vid,
            "feats": self._source.read(vid, 0, geo.num_steps),
            "segments": torch.zeros(0, 2),
            "labels": torch.zeros(0, dtype=torch.int64),
            "start": 0,
            "num_steps": geo.num_steps,
        }
