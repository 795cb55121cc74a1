"""Training / inference datasets reading activations lazily from an activation store.

Time convention (the store records it, users never derive it): ``times[i]`` is the centre time in
seconds of step ``i``; steps are evenly spaced by ``dt``. An annotation ``(s, e)`` in seconds maps to
float *step coordinates* ``((s - times[0]) / dt, (e - times[0]) / dt)`` — step ``i`` sits at coordinate
``i`` — which is what ActionFormer's loaders compute from ``feat_stride`` / ``num_frames``. The inverse
(`StepGeometry.to_seconds`) turns predictions back into seconds.

Training items are random windows of at most ``max_seq_len`` steps (ActionFormer ``truncate_feats``):
actions keep their clipped part when at least ``trunc_thresh`` of their length lies in the window, and
the window is re-drawn until it holds an action. Randomness is a pure function of
``(seed, epoch, index)`` so data loading is reproducible across workers, ranks and resumes.
"""
from __future__ import annotations

import logging
import warnings
from dataclasses import dataclass
from typing import Any, Mapping, Sequence

import numpy as np
import torch
from torch.utils.data import Dataset

from stages.data.resample import resample_features, resampled_geometry
from stages.errors import StageError

log = logging.getLogger(__name__)

#: The single class of a class-agnostic detector (``class_agnostic=True``).
AGNOSTIC_CLASS = "action"


class MissingVideosError(StageError):
    """Annotated videos that the activation store does not contain."""


@dataclass(frozen=True)
class StepGeometry:
    """Map between seconds and step coordinates of one video: affine (``t0 + i * dt``), or, for
    a variable-frame-rate video whose stored step times are not evenly spaced, piecewise linear
    through those times (``times``; extrapolated with ``dt`` beyond the ends)."""

    t0: float  # centre time (s) of step 0
    dt: float  # seconds between consecutive steps (mean spacing)
    num_steps: int
    times: tuple[float, ...] | None = None  # uneven step times (VFR); None = affine

    def _knots(self) -> np.ndarray | None:
        if self.times is None or len(self.times) != self.num_steps or self.num_steps < 2:
            return None  # e.g. a resampled copy: the affine map of the mean spacing
        return np.asarray(self.times, dtype=np.float64)

    def to_steps(self, seconds: Any) -> np.ndarray:
        x = np.asarray(seconds, dtype=np.float64)
        knots = self._knots()
        if knots is None:
            return (x - self.t0) / self.dt
        idx = np.interp(x, knots, np.arange(self.num_steps, dtype=np.float64))
        below, above = x < knots[0], x > knots[-1]
        idx = np.where(below, (x - knots[0]) / self.dt, idx)
        return np.where(above, self.num_steps - 1 + (x - knots[-1]) / self.dt, idx)

    def to_seconds(self, steps: Any) -> np.ndarray:
        i = np.asarray(steps, dtype=np.float64)
        knots = self._knots()
        if knots is None:
            return self.t0 + i * self.dt
        t = np.interp(i, np.arange(self.num_steps, dtype=np.float64), knots)
        t = np.where(i < 0, knots[0] + i * self.dt, t)
        return np.where(i > self.num_steps - 1, knots[-1] + (i - self.num_steps + 1) * self.dt, t)


def step_geometry(times: np.ndarray, video_id: str = "?", fallback_dt: float | None = None) -> StepGeometry:
    """Geometry from a store's ``times`` array (mean spacing; must be strictly increasing)."""
    t = np.asarray(times, dtype=np.float64).reshape(-1)
    if t.size == 0:
        raise StageError(f"video {video_id!r} has no steps in the store")
    if t.size == 1:
        dt = float(fallback_dt) if fallback_dt and fallback_dt > 0 else 1.0
        return StepGeometry(float(t[0]), dt, 1)
    if not np.all(np.diff(t) > 0):
        raise StageError(f"video {video_id!r}: step times are not strictly increasing")
    dt = float((t[-1] - t[0]) / (t.size - 1))
    even = np.abs(t - (t[0] + dt * np.arange(t.size))).max() <= 1e-6 * max(1.0, abs(float(t[-1])))
    return StepGeometry(float(t[0]), dt, int(t.size), None if even else tuple(map(float, t)))


@dataclass
class VideoRecord:
    """One annotated video as the datasets see it (segments already in step coordinates)."""

    video_id: str
    geometry: StepGeometry
    duration: float
    segments: np.ndarray  # [M, 2] float32, step coordinates
    labels: np.ndarray  # [M] int64 class indices

    @property
    def num_steps(self) -> int:
        return self.geometry.num_steps


def label_index(label: Any, classes: Sequence[str]) -> int:
    """Class index of an annotation label (a class name or an integer index)."""
    if isinstance(label, (int, np.integer)) and not isinstance(label, bool):
        if not 0 <= int(label) < len(classes):
            raise ValueError(f"label index {label} out of range 0..{len(classes) - 1}")
        return int(label)
    try:
        return list(classes).index(str(label))
    except ValueError:
        raise StageError(f"label {label!r} is not in the class list") from None


def _ann_field(entry: Any, name: str, default: Any = None) -> Any:
    if isinstance(entry, Mapping):
        return entry.get(name, default)
    return getattr(entry, name, default)


def select_videos(annotations: Any, subset: str | Sequence[str] | None) -> list[str]:
    """Ids of annotated videos whose subset matches (``None``: all), sorted."""
    if hasattr(annotations, "videos_in"):  # stages.data.annotations.Annotations: aliases, clear errors
        names = [subset] if subset is None or isinstance(subset, str) else list(subset)
        return sorted({v for name in names for v in annotations.videos_in(name)})
    wanted = None if subset is None else ({subset} if isinstance(subset, str) else set(subset))
    ids = [
        vid
        for vid, entry in annotations.videos.items()
        if wanted is None or _ann_field(entry, "subset") in wanted
    ]
    if wanted is not None and not ids:
        raise StageError(f"no annotated videos in subset {sorted(wanted)}")
    return sorted(ids)


def build_records(
    reader: Any,
    annotations: Any,
    video_ids: Sequence[str],
    allow_missing: bool = False,
    resample_steps: int = 0,
) -> list[VideoRecord]:
    """Map annotations to step coordinates using each video's stored step times (with
    ``resample_steps > 0``: the times after resampling every video to that many steps)."""
    stored = set(reader.videos())
    missing = [v for v in video_ids if v not in stored]
    if missing:
        shown = ", ".join(missing[:10]) + (f", ... ({len(missing)} in all)" if len(missing) > 10 else "")
        msg = f"{len(missing)} annotated video(s) missing from the store: {shown}"
        if not allow_missing:
            raise MissingVideosError(msg)
        warnings.warn(msg + " (skipped)", stacklevel=2)
    classes = list(annotations.classes)
    records = []
    for vid in video_ids:
        if vid not in stored:
            continue
        info = reader.video_info(vid)
        entry = annotations.videos[vid]
        duration = _ann_field(entry, "duration") or info.get("duration") or 0.0
        geo = step_geometry(reader.times(vid), vid, fallback_dt=info.get("duration"))
        if resample_steps:
            geo = resampled_geometry(geo, resample_steps)
        segs = _ann_field(entry, "segments") or []
        sec = np.asarray([[float(s), float(e)] for s, e, _ in segs], dtype=np.float64).reshape(-1, 2)
        labels = np.asarray([label_index(lab, classes) for _, _, lab in segs], dtype=np.int64)
        steps = geo.to_steps(sec)
        if duration and float(duration) > 0 and len(steps):  # clip to the video's time span
            steps = np.clip(steps, geo.to_steps(0.0), geo.to_steps(float(duration)))
        keep = steps[:, 1] > steps[:, 0]
        records.append(
            VideoRecord(vid, geo, float(duration), steps[keep].astype(np.float32), labels[keep])
        )
    return records


def truncate_window(
    segments: np.ndarray,
    labels: np.ndarray,
    num_steps: int,
    max_seq_len: int,
    trunc_thresh: float,
    rng: np.random.Generator,
    crop_ratio: tuple[float, float] | None = None,
    max_trials: int = 200,
    has_action: bool = True,
) -> tuple[int, int, np.ndarray, np.ndarray]:
    """Pick a training window ``[st, ed)`` (ActionFormer ``truncate_feats``).

    Returns ``(st, ed, segments, labels)`` with segments clipped to the window, shifted to start at
    ``st`` and kept only when ``>= trunc_thresh`` of their length is inside. Videos no longer than
    ``max_seq_len`` are returned whole unless ``crop_ratio`` asks for a random crop of that fraction.
    """
    length = max_seq_len
    if num_steps <= max_seq_len:
        if crop_ratio is None:
            return 0, num_steps, segments, labels
        lo = max(int(round(crop_ratio[0] * num_steps)), 1)
        hi = min(int(round(crop_ratio[1] * num_steps)), num_steps)
        length = int(rng.integers(lo, hi + 1))
        if length >= num_steps:
            return 0, num_steps, segments, labels
    seg = np.asarray(segments, dtype=np.float64).reshape(-1, 2)
    area = np.maximum(seg[:, 1] - seg[:, 0], 1e-6)
    for _ in range(max(1, max_trials)):
        st = int(rng.integers(0, num_steps - length + 1))
        ed = st + length
        # step i covers [i - 0.5, i + 0.5]: the window covers [st - 0.5, ed - 0.5]
        left = np.maximum(seg[:, 0], st - 0.5)
        right = np.minimum(seg[:, 1], ed - 0.5)
        keep = (np.clip(right - left, 0.0, None) / area) >= trunc_thresh
        if not has_action or keep.any():
            break
    out = np.stack([left[keep], right[keep]], axis=1) - st
    return st, ed, out.astype(np.float32), np.asarray(labels)[keep]


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


class StoreDataset(Dataset):
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
        self.features = check_features(reader, features)
        self.layers = check_layers(reader, layers) if (layers or not self.features) else []
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
        self.mean_layers = [x for x in self.layers if x in {int(m) for m in mean_layers}]
        self.cached = resolve_cache(cache, reader, [r.video_id for r in records], self.layers,
                                    self.mean_layers, cache_max_mb)
        self._source = _FeatureSource(reader, self.layers, self.cached, resample_steps, self.mean_layers,
                                      self.features)

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


class InferenceDataset(Dataset):
    """Whole videos (no annotations needed), for prediction."""

    def __init__(self, reader: Any, video_ids: Sequence[str], layers: Sequence[int], cache: bool | str = False,
                 resample_steps: int = 0, mean_layers: Sequence[int] = (), cache_max_mb: float = 2048.0,
                 features: Sequence[str] = ()) -> None:
        self.features = check_features(reader, features)
        self.layers = check_layers(reader, layers) if (layers or not self.features) else []
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
        self.mean_layers = [x for x in self.layers if x in {int(m) for m in mean_layers}]
        self.cached = resolve_cache(cache, reader, self.video_ids, self.layers, self.mean_layers, cache_max_mb)
        self._source = _FeatureSource(reader, self.layers, self.cached, resample_steps, self.mean_layers,
                                      self.features)

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


def length_sorted_batches(lengths: Sequence[int], batch_size: int) -> list[list[int]]:
    """Index batches of similar length (longest first) to limit padding at inference."""
    order = sorted(range(len(lengths)), key=lambda i: (-lengths[i], i))
    return [order[i : i + batch_size] for i in range(0, len(order), batch_size)]


def padded_length(length: int, multiple: int) -> int:
    """``length`` rounded up to a multiple of ``multiple`` (the feature pyramid's largest stride)."""
    multiple = max(1, int(multiple))
    return max(multiple, -(-int(length) // multiple) * multiple)


class Collate:
    """Pad a list of items to the batch's longest length rounded up to ``pad_multiple``.

    Returns ``{"feats": {layer: [B, T, cells, C]}, "mask": [B, T] bool, "targets": [(segments [M,2],
    labels [M])], "video_ids", "starts", "lengths" [B]}``; padded steps are zeros with mask False.
    """

    def __init__(self, pad_multiple: int = 32) -> None:
        self.pad_multiple = int(pad_multiple)

    def __call__(self, batch: list[dict[str, Any]]) -> dict[str, Any]:
        if not batch:
            raise ValueError("empty batch")
        lengths = [int(item["num_steps"]) for item in batch]
        t_pad = padded_length(max(lengths), self.pad_multiple)
        feats: dict[int, torch.Tensor] = {}
        for layer in batch[0]["feats"]:
            first = batch[0]["feats"][layer]
            out = first.new_zeros((len(batch), t_pad) + tuple(first.shape[1:]))
            for b, item in enumerate(batch):
                out[b, : lengths[b]] = item["feats"][layer]
            feats[layer] = out
        lengths_t = torch.tensor(lengths, dtype=torch.int64)
        mask = torch.arange(t_pad)[None, :] < lengths_t[:, None]
        return {
            "feats": feats,
            "mask": mask,
            "targets": [(item["segments"], item["labels"]) for item in batch],
            "video_ids": [item["video_id"] for item in batch],
            "starts": [int(item["start"]) for item in batch],
            "lengths": lengths_t,
        }


def collate(batch: list[dict[str, Any]], pad_multiple: int = 32) -> dict[str, Any]:
    """Functional form of `Collate`."""
    return Collate(pad_multiple)(batch)
