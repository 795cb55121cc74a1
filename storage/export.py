"""Export one layer (or one named feature) of a store as ActionFormer/OpenTAD-style ``.npy`` files.

``export_npy`` writes ``<out_dir>/<key>.npy`` (float32 [T, C]; ``key = safe_key(video_id)``, equal
to the id for ordinary ids such as ``video_test_0000004``) and ``<out_dir>/index.json`` mapping
key → {video_id, fps, times_first, step_seconds, num_steps, duration}, which is what a feature-based
TAL codebase needs to map feature rows back to seconds.  ``feature="fc_norm"`` exports the stored
reference feature (VideoMAEv2's ``fc_norm(mean token)``, float32 [T, C]) as it is, which is the layout
of the released VideoMAEv2 THUMOS-14 features that ActionFormer and OpenTAD read.
"""

from __future__ import annotations

import json
import os
import shutil
from collections.abc import Iterable
from pathlib import Path

import numpy as np

from storage.atomic import atomic_write
from storage.keys import safe_key
from storage.reader import ActivationReader, StoreError, UnknownFeatureError, UnknownLayerError

__all__ = ["export_npy", "CELL_MODES"]

CELL_MODES = ("mean", "flatten")
_BLOCK_STEPS = 1024


def _atomic_save(path: Path, array: np.ndarray) -> None:
    atomic_write(path, lambda fh: np.save(fh, array), fsync=False)


def export_npy(
    reader: ActivationReader,
    out_dir: str | Path,
    layer: int | None,
    cells: str = "mean",
    videos: Iterable[str] | None = None,
    *,
    feature: str | None = None,
    overwrite: bool = False,
) -> Path:
    """Write one ``.npy`` per video for `layer` and an ``index.json``; returns the index path.

    A non-empty `out_dir` is refused unless `overwrite` (which replaces the folder).  Everything is
    written to a temporary sibling folder first and renamed into place, so `out_dir` is either
    untouched or the complete export, and a failed export (unknown layer, ...) leaves nothing.

    `cells`: "mean" averages the spatial/temporal cells → [T, C]; "flatten" concatenates them →
    [T, cells*C]. `videos` restricts the export (default: every complete video). `feature` exports
    that named feature ([T, C] float32, unchanged) instead of a layer (`layer` must then be None).
    """
    if (feature is None) == (layer is None):
        raise StoreError("export_npy: give either a layer or a feature")
    if cells not in CELL_MODES:
        raise StoreError(f"unknown cells mode {cells!r}; expected one of {CELL_MODES}")
    out = Path(out_dir)
    if out.exists() and not out.is_dir():
        raise StoreError(f"export destination is not a directory: {out}")
    if out.is_dir() and any(out.iterdir()) and not overwrite:
        raise StoreError(f"export folder {out} is not empty; choose another folder or pass "
                         "--overwrite to replace it")
    ids = reader.videos() if videos is None else list(videos)
    if feature is None:  # every video must have the layer before any file is written
        lacking = [v for v in ids if layer not in reader.layer_shapes(v)]
        if lacking:
            raise UnknownLayerError(
                f"layer {layer} not stored for {len(lacking)} video(s), e.g. {lacking[0]!r} "
                f"(stored: {sorted(reader.layer_shapes(lacking[0]))})"
            )
    out.parent.mkdir(parents=True, exist_ok=True)
    work = out.parent / f".{out.name}.export-{os.getpid()}"
    shutil.rmtree(work, ignore_errors=True)
    work.mkdir()
    try:
        _export_rows(reader, work, ids, layer, cells, feature)
        _publish_dir(work, out)
    finally:
        shutil.rmtree(work, ignore_errors=True)
    return out / "index.json"


def _publish_dir(work: Path, out: Path) -> None:
    """Move the finished export `work` to `out` (an old `out` is replaced, then removed)."""
    old = out.parent / f".{out.name}.old-{os.getpid()}"
    if out.exists():
        os.rename(out, old)
    try:
        os.rename(work, out)
    except OSError:
        if old.exists():
            os.rename(old, out)  # put the user's folder back
        raise
    shutil.rmtree(old, ignore_errors=True)


def _export_rows(reader: ActivationReader, out: Path, ids: list[str], layer: int | None, cells: str,
                 feature: str | None) -> None:
    index: dict[str, dict] = {}
    if feature is not None:  # every video must have it before any file is written
        lacking = [v for v in ids if feature not in reader.feature_shapes(v)]
        if lacking:
            raise UnknownFeatureError(
                f"feature {feature!r} not stored for {len(lacking)} video(s), e.g. {lacking[0]!r} "
                "(extract with the reference feature to store fc_norm)"
            )
    for video_id in ids:
        if feature is not None:
            feats = np.ascontiguousarray(reader.read_feature(video_id, feature), dtype=np.float32)
            steps = len(feats)
        else:
            shapes = reader.layer_shapes(video_id)
            if layer not in shapes:
                raise UnknownLayerError(
                    f"layer {layer} not stored for video {video_id!r} (stored: {sorted(shapes)})"
                )
            steps, n_cells, channels = shapes[layer]
            width = channels if cells == "mean" else n_cells * channels
            feats = np.empty((steps, width), dtype=np.float32)
            for t0 in range(0, steps, _BLOCK_STEPS):
                t1 = min(steps, t0 + _BLOCK_STEPS)
                block = reader.read(video_id, [layer], t0, t1)[layer]
                feats[t0:t1] = block.mean(axis=1) if cells == "mean" else block.reshape(t1 - t0, -1)
        key = safe_key(video_id)
        _atomic_save(out / f"{key}.npy", feats)
        times = reader.times(video_id)
        info = reader.video_info(video_id)
        index[key] = {
            "video_id": video_id,
            "fps": info.get("fps"),
            "times_first": float(times[0]) if steps else None,
            "step_seconds": float(np.median(np.diff(times))) if steps > 1 else None,
            "num_steps": int(steps),
            "duration": info.get("duration"),
        }
    (out / "index.json").write_text(json.dumps(index, indent=1, sort_keys=True, ensure_ascii=False), "utf-8")
