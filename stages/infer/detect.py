"""Detect stage: new videos → the run's exact feature extraction → trained model → detections.

`detect()` reads ``run.json`` of a training run, rebuilds the `ExtractConfig` that produced the
run's training store from the store provenance recorded there (same backbone preset, layers, clip
sampling, resolution, resize, normalisation, pooling, store dtype and compute precision, and the
same backbone weights: the checkpoint file's SHA-256 must equal the recorded one), extracts the
given videos into a cache store, runs the run's EMA model with the run's NMS settings, and returns
(and optionally writes) ActivityNet-format results::

    {"version": "losa-detect-1", "results": {video_id: [{"label", "score", "segment": [s, e]}]},
     "external_data": {"used": true, "details": "...", "run": ..., "videos": {...}, ...}}

Video ids are those of `losa-extract` (file name without suffix; path relative to a folder given
as input).  In the cache store (default ``run_dir/detect_cache.zarr``) each video lives under
``<video_id>@<first 16 hex digits of its SHA-256>``, so a video is extracted once and re-used by
later calls wherever the file lies, while a changed file with the same name is extracted anew.
"""

from __future__ import annotations

import os
import time
import warnings
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from stages.rundir import MODEL_FILE, RUN_FILE, RunError
from stages.rundir import read_run_info as load_run_info
from storage.atomic import atomic_write_json
from stages.errors import StageError

__all__ = [
    "CACHE_STORE",
    "DETECT_VERSION",
    "CheckpointMismatchError",
    "RunError",
    "VideoInput",
    "detect",
    "extract_config_from_provenance",
    "load_run_info",
    "prefill_cache",
    "prepare_videos",
    "resolve_checkpoint",
]

CACHE_STORE = "detect_cache.zarr"
DETECT_VERSION = "losa-detect-1"


class CheckpointMismatchError(StageError):
    """The backbone checkpoint differs from the one the run's features were extracted with."""


@dataclass(frozen=True)
class VideoInput:
    """One video to detect on: its id, file, content SHA-256 and probe info (`VideoInfo`)."""

    video_id: str
    path: Path
    sha256: str
    info: Any

    @property
    def cache_id(self) -> str:
        """Id in the cache store: ``<video_id>@<16 hex digits of the content SHA-256>``."""
        return f"{self.video_id}@{self.sha256[:16]}"


# -------------------------------------------------------------------------------- run and config
def _recorded_sha(provenance: Mapping[str, Any]) -> str | None:
    """Recorded checkpoint SHA-256, or None for random weights."""
    weights = provenance.get("checkpoint") or {}
    sha = weights.get("sha256")
    if not sha:
        raise RunError("store provenance records no checkpoint sha256")
    return None if sha == "random" else str(sha)


def resolve_checkpoint(provenance: Mapping[str, Any], run_info: Mapping[str, Any],
                       checkpoint: str | os.PathLike | None = None, run_name: str = "run") -> Path | None:
    """The backbone checkpoint to re-extract with, verified against the recorded SHA-256.

    The path is ``checkpoint`` if given, else the one recorded with the run (``run.json`` key
    ``checkpoint`` or provenance ``checkpoint.path``).  Returns None for random weights.  Raises
    FileNotFoundError when the file is missing and CheckpointMismatchError when its SHA-256
    differs from the recorded one.
    """
    from stages.extract.config import sha256_file

    sha = _recorded_sha(provenance)
    if sha is None:
        if checkpoint is not None:
            raise CheckpointMismatchError(
                f"{run_name} was extracted with random backbone weights; do not pass a checkpoint "
                f"({checkpoint})")
        return None
    recorded = run_info.get("checkpoint") or (provenance.get("checkpoint") or {}).get("path")
    path = checkpoint if checkpoint is not None else recorded
    if path is None:
        raise RunError(f"{run_name} features were extracted with the checkpoint of sha256 {sha[:16]}...; "
                       "pass the same file as checkpoint (--checkpoint PATH)")
    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(f"checkpoint not found: {path} (the {run_name} features were "
                                f"extracted with sha256 {sha[:16]}...)")
    actual = sha256_file(path)
    if actual != sha:
        raise CheckpointMismatchError(
            f"checkpoint {path} has sha256 {actual[:16]}... but the {run_name} features were extracted "
            f"with {sha[:16]}...: use the same checkpoint file")
    return path


def extract_config_from_provenance(provenance: Mapping[str, Any], checkpoint: Path | None,
                                   device: str = "auto", batch_clips: int = 32,
                                   chunk_steps: int = 256) -> Any:
    """Rebuild the `ExtractConfig` recorded in a store provenance and check that it reproduces it.

    ``checkpoint`` must be the verified file (`resolve_checkpoint`) or None for random weights
    (then the recorded seed is used).  RunError names what cannot be reproduced.
    """
    from losa.encoder.sampling import ClipSampling
    from stages.extract.config import ExtractConfig
    from storage import check_provenance

    try:
        last = provenance.get("last_layer")
        layers = [int(v) for v in provenance["layers"] if last is None or int(v) != int(last)]
        weights = provenance.get("checkpoint") or {}
        cfg = ExtractConfig(
            preset=str(provenance["backbone"]["preset"]),
            checkpoint=checkpoint,
            seed=int(weights.get("seed", 0)) if checkpoint is None else 0,
            layers=layers,
            include_last=last is not None,
            sampling=ClipSampling.from_dict(dict(provenance["sampling"])),
            resolution=int(provenance["resolution"]),
            resize=str(provenance["resize"]),
            norm=str(provenance["norm"]),
            # stores from before the choice was recorded were made with the resized 16x224 table
            pos_table=str(provenance.get("pos_table", "trilinear")),
            reference_feature=bool(provenance.get("reference_feature")),
            temporal=str(provenance["temporal"]),
            grid=int(provenance["grid"]),
            store_dtype=str(provenance["store_dtype"]),
            precision=str(provenance["precision"]),
            batch_clips=int(batch_clips),
            chunk_steps=int(chunk_steps),
            device=str(device),
        )
    except KeyError as exc:
        raise RunError(f"store provenance lacks the extraction setting {exc.args[0]!r}") from None
    sha = provenance["checkpoint"]["sha256"] if checkpoint is not None else None
    rebuilt = cfg.provenance(sha, precision=str(provenance["precision"]))
    for key in ("pos_table", "reference_feature"):  # not recorded by older versions
        if key not in provenance:
            rebuilt.pop(key, None)
    try:
        check_provenance(provenance, rebuilt)
    except ValueError as exc:  # keep the per-key differences, drop the store-path advice
        diffs = str(exc).split("): ", 1)[-1]
        raise RunError(f"cannot reproduce the run's feature extraction: {diffs} (recorded vs rebuilt)") from None
    return cfg


# ------------------------------------------------------------------------------------- videos
def prepare_videos(videos: Sequence[str | os.PathLike]) -> list[VideoInput]:
    """Expand files/folders (as `losa-extract` does), check every file decodes (VideoError naming
    the file otherwise) and fingerprint its content."""
    from stages.extract.decode import probe_video
    from stages.extract.run import discover_videos
    from stages.extract.config import sha256_file

    if not videos:
        raise StageError("no videos given")
    items = discover_videos(list(videos))
    if not items:
        raise FileNotFoundError(f"no video files found in: {', '.join(str(v) for v in videos)}")
    out = []
    for item in items:
        info = probe_video(item.path)  # VideoError (a ValueError) names the file and the reason
        out.append(VideoInput(item.video_id, Path(item.path), sha256_file(item.path), info))
    return out


def _extract(cfg: Any, sha: str | None, inputs: list[VideoInput], cache: Path, progress: bool,
             poll_seconds: float = 2.0) -> None:
    """Extract the inputs missing from the cache store; raise VideoError naming a failed file."""
    from stages.extract.decode import VideoError
    from stages.extract.run import VideoItem, extract_items
    from storage import ProvenanceMismatch, ZarrActivationStore

    provenance = cfg.provenance(sha, precision=cfg.resolve_precision(cfg.resolve_device()))
    try:
        store = ZarrActivationStore.create_or_open(cache, provenance)
    except ProvenanceMismatch as exc:
        raise RunError(f"cache store {cache} holds features of another extraction (delete it or "
                       f"choose another cache): {exc}") from None
    # run_extract derives ids from file names; detect needs content-keyed ids, so it drives the
    # same single-worker claim/extract loop with explicit items.
    items = [VideoItem(v.cache_id, v.path) for v in inputs]
    while todo := [it for it in items if not store.is_complete(it.video_id)]:
        summary = extract_items(cfg, todo, cache, provenance, progress)
        if summary.failed_videos:
            failed = set(summary.failed_videos)
            reasons = {str(f["video_id"]): str(f.get("reason", "")) for f in store.reader().failures()}
            bad = next(it for it in todo if it.video_id in failed)
            reason = reasons.get(bad.video_id) or "extraction failed"
            raise VideoError(reason if str(bad.path) in reason else f"{bad.path}: {reason}")
        if summary.busy:  # another process holds some of them: wait until it commits or dies
            time.sleep(poll_seconds)


def prefill_cache(
    videos: Sequence[str | os.PathLike],
    recipe_store: str | os.PathLike,
    cache_store: str | os.PathLike,
    *,
    checkpoint: str | os.PathLike | None = None,
    device: str = "auto",
    batch_clips: int = 32,
    progress: bool = False,
) -> list[str]:
    """Extract ``videos`` into the detect cache with the recipe of ``recipe_store`` (the store a
    run is trained on), before any run exists; returns their cache ids.  `detect` with a run
    trained on that store then finds them there and runs no backbone (a pipeline stage of its own,
    so that every experiment re-uses the same cache)."""
    from storage import open_store

    prov = open_store(recipe_store).provenance
    cfg, _, _, sha = _recipe(prov, {}, checkpoint, f"store {recipe_store}", device, batch_clips)
    inputs = prepare_videos(videos)
    _extract(cfg, sha, inputs, Path(cache_store), progress)
    return [v.cache_id for v in inputs]


def _recipe(prov: Mapping[str, Any], run_info: Mapping[str, Any], checkpoint: str | os.PathLike | None,
            name: str, device: str, batch_clips: int) -> tuple[Any, Path | None, Any, str | None]:
    """The `ExtractConfig` that reproduces the features of provenance ``prov`` on ``device``, the
    verified checkpoint (None: random weights), the device and the weights' recorded SHA-256."""
    from stages.runtime import resolve_device

    ckpt = resolve_checkpoint(prov, run_info, checkpoint, name)
    dev = resolve_device(device)  # ValueError for an unknown / unavailable device
    cfg = extract_config_from_provenance(prov, ckpt, device=str(dev), batch_clips=batch_clips)
    return cfg, ckpt, dev, None if ckpt is None else prov["checkpoint"]["sha256"]


# ----------------------------------------------------------------------------------- detection
def detect(
    videos: Sequence[str | os.PathLike],
    run_dir: str | os.PathLike,
    out_json: str | os.PathLike | None = None,
    cache_store: str | os.PathLike | None = None,
    device: str = "auto",
    batch_size: int = 4,
    *,
    checkpoint: str | os.PathLike | None = None,
    batch_clips: int = 32,
    progress: bool = False,
) -> dict[str, Any]:
    """Detect actions in ``videos`` (files or folders) with the trained run ``run_dir``.

    Returns the ActivityNet results dict (every detection the model keeps after the run's NMS,
    best first, segments in seconds within ``[0, duration]``) and writes it to ``out_json`` when
    given.  ``checkpoint`` overrides the recorded backbone checkpoint path (its SHA-256 must still
    match).  ``batch_size`` is videos per model batch, ``batch_clips`` clips per backbone forward.
    With random backbone weights a UserWarning says that the features are meaningless.
    """
    import torch

    from stages.infer.predict import load_run, predict_store
    from storage import open_store

    if isinstance(batch_size, bool) or not isinstance(batch_size, int) or batch_size < 1:
        raise StageError(f"batch_size must be a positive integer, got {batch_size!r}")
    run_dir = Path(run_dir)
    info = load_run_info(run_dir)
    name = f"run {run_dir}"
    prov = info["store_provenance"]
    cfg, ckpt, dev, sha = _recipe(prov, info, checkpoint, name, device, batch_clips)
    if ckpt is None:
        seed = (prov.get("checkpoint") or {}).get("seed", 0)
        warnings.warn(f"{name} used a random {prov.get('backbone', {}).get('preset', '?')} backbone "
                      f"(seed {seed}): detections are only meaningful for testing", stacklevel=2)
    inputs = prepare_videos(videos)

    model, model_info = load_run(run_dir, dev)
    if list(model_info.get("classes", info["classes"])) != list(info["classes"]):
        raise RunError(f"{run_dir / MODEL_FILE} and {run_dir / RUN_FILE} disagree on the class list")
    cache = Path(cache_store) if cache_store is not None else run_dir / CACHE_STORE
    _extract(cfg, sha, inputs, cache, progress)

    reader = open_store(cache)
    tcfg = info["train_cfg"]
    with torch.inference_mode():
        raw = predict_store(model, reader, [v.cache_id for v in inputs], batch_size, device=dev,
                            nms=tcfg.get("nms"), classes=list(info["classes"]),
                            progress=progress,
                            resample_steps=int(tcfg.get("resample_steps", 0) or 0))["results"]
    results: dict[str, list[dict[str, Any]]] = {}
    videos_meta: dict[str, dict[str, Any]] = {}
    for v in inputs:
        vinfo = reader.video_info(v.cache_id)
        duration = float(vinfo.get("duration") or v.info.duration)
        dets = []
        for d in raw.get(v.cache_id, []):
            s, e = (min(round(max(float(x), 0.0), 3), duration) for x in d["segment"])
            if e > s:  # milliseconds are plenty for seconds-long actions
                dets.append({"label": str(d["label"]), "score": round(float(d["score"]), 6),
                             "segment": [s, e]})
        dets.sort(key=lambda d: -d["score"])
        results[v.video_id] = dets
        videos_meta[v.video_id] = {
            "source": str(v.path.resolve()), "sha256": v.sha256, "cache_id": v.cache_id,
            "duration": duration, "fps": float(vinfo.get("fps") or v.info.fps),
            "num_steps": int(vinfo.get("num_steps") or 0),
        }
    weights = "random weights" if ckpt is None else f"checkpoint sha256 {prov['checkpoint']['sha256'][:16]}..."
    payload = {
        "version": DETECT_VERSION,
        "results": results,
        "external_data": {
            "used": True,
            "details": (f"LoSA ({info['model_cfg'].get('mode', 'losa')}) on frozen VideoMAEv2 "
                        f"{cfg.preset} features ({weights}), layers {cfg.all_layers}"),
            "run": str(run_dir.resolve()),
            "classes": list(info["classes"]),
            "nms": tcfg.get("nms"),
            "store_provenance": prov,
            "checkpoint": str(ckpt.resolve()) if ckpt is not None else None,
            "cache_store": str(cache.resolve()),
            "device": str(dev),
            "videos": videos_meta,
        },
    }
    if out_json is not None:
        atomic_write_json(Path(out_json), payload)
    return payload
