"""Extraction stage: videos → frozen VideoMAEv2 block activations in a resumable Zarr store.

Per video: claim (file lock) → probe and decode in a background thread (prefetch 2 batches; the
next video's reader starts as soon as the current file is read, so its probe and first batches overlap
the current video's last forward passes) →
backbone forward under `torch.inference_mode()` → `pool_tokens` → cast to the store dtype → a
writer thread writes whole time chunks → atomic commit with the centre time of every step.
A video that fails (unreadable file, decoder error, ...) is recorded under `failures/` and the run
goes on; a rerun skips complete videos and retries the rest.  Several processes (`workers`, or
independent `losa-extract` runs / shards) may share one store: the claims guarantee that every
video is extracted exactly once.  Same device and dtype → bit-identical stored values on rerun.

This module holds the run loop; input discovery is `discovery.py`, the backbone `encoder.py`, the
writer thread `writer.py` (their public names are re-exported here).
"""

from __future__ import annotations

import functools
import os
import time
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from stages.extract.decode import (
    BackgroundIterator,
    VideoError,
    VideoInfo,
    backend_name,
    iter_frame_batches,
    probe_video,
)
from stages.extract.config import ExtractConfig, sha256_file
from stages.extract.discovery import VIDEO_SUFFIXES, VideoItem, discover_videos, select_shard, storable_id
from stages.extract.encoder import ClipEncoder, _stored_features, check_checkpoint
from stages.extract.failures import record_video_failure
from stages.extract.timing import frame_start_times, step_times
from stages.extract.writer import ChunkedWriter
from stages.errors import StageError

__all__ = [
    "VIDEO_SUFFIXES",
    "ClipEncoder",
    "ChunkedWriter",
    "check_checkpoint",
    "ExtractSummary",
    "VideoItem",
    "discover_videos",
    "extract_items",
    "select_shard",
    "run_extract",
    "storable_id",
]


@dataclass
class ExtractSummary:
    """What one `run_extract` call did (over all its workers)."""

    done: int = 0
    skipped_existing: int = 0
    failed: int = 0
    clips: int = 0
    seconds: float = 0.0
    busy: int = 0  # claimed by another process at the time (left to it)
    failed_videos: list[str] = field(default_factory=list)
    #: failures that could not be written to the store's failure log: "video_id: reason"
    unrecorded: list[str] = field(default_factory=list)
    #: why the run stopped early (store not writable: disk full, read-only, ...); None = it did not
    stopped: str | None = None

    @property
    def clips_per_second(self) -> float:
        return self.clips / self.seconds if self.seconds > 0 else 0.0

    def merge(self, other: ExtractSummary) -> None:
        """Add another worker's counts (seconds: the longest worker wall time)."""
        self.done += other.done
        self.skipped_existing += other.skipped_existing
        self.failed += other.failed
        self.clips += other.clips
        self.busy += other.busy
        self.failed_videos += other.failed_videos
        self.unrecorded += other.unrecorded
        self.stopped = self.stopped or other.stopped
        self.seconds = max(self.seconds, other.seconds)

    def to_dict(self) -> dict:
        return {**self.__dict__, "clips_per_second": self.clips_per_second}


# ----------------------------------------------------------------------------------- the loop
def _open_store(store_path: Path, provenance: dict):
    from storage.zarr_store import ZarrActivationStore

    return ZarrActivationStore.create_or_open(store_path, provenance)


def _checkpoint_sha(cfg: ExtractConfig) -> str | None:
    return sha256_file(cfg.checkpoint) if cfg.checkpoint is not None else None


def _decode_video(item: VideoItem, cfg: ExtractConfig, threads: int):
    """Everything read from one video file, in order: ``(info, frame start times)``, then its frame
    batches (`iter_frame_batches`).  Run in a `BackgroundIterator`, so the probe and the decoding
    can start while the previous video is still being encoded."""
    info: VideoInfo = probe_video(item.path)
    yield info, frame_start_times(item.path, info.num_frames)
    yield from iter_frame_batches(item.path, cfg.sampling, cfg.resolution, cfg.resize, cfg.batch_clips,
                                  info=info, threads=threads)


def start_decoding(item: VideoItem, cfg: ExtractConfig, threads: int) -> BackgroundIterator:
    """A background reader of `item` (:func:`_decode_video`, prefetch 2 batches); close it when unused."""
    return BackgroundIterator(_decode_video(item, cfg, threads), prefetch=2)


def _extract_one(
    store, item: VideoItem, encoder: ClipEncoder, cfg: ExtractConfig, decode_threads: int,
    reader: BackgroundIterator | None = None, on_decoded=None,
) -> int:
    """Extract one claimed video into the store; returns its number of clips.

    ``reader``: this video's `start_decoding`, started ahead by the caller (else started here); it
    is closed either way.  ``on_decoded()`` is called once, from this thread, as soon as the reader
    has read the whole file (its last batches still to encode): the caller starts reading the next
    video then, so that video's probe and first batches overlap this one's last forward passes."""
    t_start = time.perf_counter()
    reader = reader if reader is not None else start_decoding(item, cfg, decode_threads)
    with reader:
        batches = iter(reader)
        info, frame_times = next(batches)  # the probe's errors are raised here, for this video
        starts = cfg.sampling.clip_starts(info.num_frames)
        # clip centres: frame rate, or presentation timestamps for variable-frame-rate files
        timed = step_times(starts, cfg.sampling.span(), info.num_frames, info.fps, frame_times)
        times = np.asarray(timed.times, dtype=np.float64)
        num_steps = len(starts)
        writer = store.begin_video(
            item.video_id,
            layers=cfg.all_layers,
            cells=cfg.cells,
            channels=cfg.backbone.embed_dim,
            num_steps=num_steps,
            dtype=cfg.store_dtype,
            chunk_steps=cfg.chunk_steps,
            features=_stored_features(cfg),
        )
        try:
            with ChunkedWriter(writer, num_steps, cfg.chunk_steps) as sink:
                for t0, frames, index in batches:
                    sink.put(t0, encoder.encode(frames, index))
                    if on_decoded is not None and reader.finished:
                        on_decoded()
                        on_decoded = None
            if sink.rows_written != num_steps:
                raise VideoError(f"{item.path}: decoded {sink.rows_written} of {num_steps} clips")
            writer.commit(times, {
                "source": os.path.abspath(item.path),
                "fps": info.fps,
                "num_frames": info.num_frames,
                "duration": timed.duration,
                "num_steps": num_steps,
                "timing": timed.timing,  # "fps": frame index / fps; "pts": decoder timestamps (VFR)
                "extra": {
                    "width": info.width,
                    "height": info.height,
                    "device": encoder.device_name,
                    "precision": encoder.precision,
                    "decoder": backend_name(),
                    # where the weights were read from (not provenance: moving the file must not
                    # invalidate the store; the sha256 in provenance is what identifies them)
                    "checkpoint_path": os.path.abspath(cfg.checkpoint) if cfg.checkpoint else None,
                    "seconds": round(time.perf_counter() - t_start, 3),
                },
            })
        except BaseException:
            writer.abort()
            raise
    return num_steps


class _SetupFailure(Exception):
    """Building the encoder failed: an error of the run, not of the video being extracted."""

    def __init__(self, error: BaseException) -> None:
        super().__init__(str(error))
        self.error = error


def _build_encoder(cfg: ExtractConfig) -> ClipEncoder:
    try:
        return ClipEncoder(cfg)
    except Exception as exc:
        raise _SetupFailure(exc) from exc


def _worker_loop(
    cfg: ExtractConfig,
    items: list[VideoItem],
    store_path: Path,
    provenance: dict,
    worker: int,
    workers: int,
    progress: bool,
    encoder: ClipEncoder | None = None,
) -> ExtractSummary:
    """Run the claim → extract loop over `items` in one process (rotated by worker index)."""
    import torch

    summary = ExtractSummary()
    t_start = time.perf_counter()
    if workers > 1 and cfg.resolve_device() == "cpu":
        torch.set_num_threads(max(1, (os.cpu_count() or 1) // workers))
    decode_threads = 1 if workers > 1 else 0
    store = _open_store(store_path, provenance)
    offset = (len(items) * worker) // workers
    order = items[offset:] + items[:offset]
    bar = None
    if progress:
        from tqdm import tqdm

        bar = tqdm(total=len(order), unit="video", position=worker, leave=workers == 1,
                   desc=f"extract[{worker}]" if workers > 1 else "extract", dynamic_ncols=True)
    # the next video's reader, started while the current one's last batches are encoded (read-only:
    # taken before that video's claim, closed unused when it turns out done or busy)
    ahead: dict[int, BackgroundIterator] = {}

    def read_ahead(pos: int) -> None:
        if pos < len(order) and pos not in ahead:
            try:
                if not store.is_complete(order[pos].video_id):
                    ahead[pos] = start_decoding(order[pos], cfg, decode_threads)
            except Exception:  # noqa: BLE001 - that video's own turn reports it
                pass

    try:
        for pos, item in enumerate(order):
            reader = ahead.pop(pos, None)
            try:
                if store.is_complete(item.video_id):
                    summary.skipped_existing += 1
                else:
                    with store.claim(item.video_id) as mine:
                        if not mine:
                            summary.busy += 1
                        else:
                            if encoder is None:  # built lazily: a finished store costs no model load
                                encoder = _build_encoder(cfg)
                            summary.clips += _extract_one(store, item, encoder, cfg, decode_threads, reader,
                                                          functools.partial(read_ahead, pos + 1))
                            summary.done += 1
            except _SetupFailure as exc:  # not the video's fault: stop with the encoder's error
                raise exc.error from None
            except Exception as exc:  # one bad video (or name) must not stop the run
                summary.stopped = record_video_failure(store, item.video_id, item.path, exc, summary)
            finally:
                if reader is not None:  # idempotent: already closed when it was used
                    reader.close()
            if summary.stopped:
                break
            if bar is not None:
                elapsed = time.perf_counter() - t_start
                bar.set_postfix(clips_s=f"{summary.clips / max(elapsed, 1e-9):.1f}",
                                failed=summary.failed, refresh=False)
                bar.update(1)
    finally:
        for reader in ahead.values():
            reader.close()
        if bar is not None:
            bar.close()
    summary.seconds = time.perf_counter() - t_start
    return summary


def extract_items(cfg: ExtractConfig, items: list[VideoItem], store_path: Path, provenance: dict,
                  progress: bool = False) -> ExtractSummary:
    """Extract explicitly given items (ids chosen by the caller, e.g. content-keyed by `losa-detect`)
    into the store at ``store_path`` with this process's single claim → extract loop."""
    return _worker_loop(cfg, items, Path(store_path), provenance, 0, 1, progress)


def run_extract(
    cfg: ExtractConfig,
    inputs: Sequence[Path | str] | Path | str,
    store_path: Path | str,
    shard: tuple[int, int] = (0, 1),
    workers: int = 1,
    progress: bool = True,
    encoder: ClipEncoder | None = None,
    scheduler: str | None = None,
) -> ExtractSummary:
    """Extract every video of `inputs` (files and/or folders) in shard `shard` into `store_path`.

    Creates the store or checks that its provenance matches `cfg` (ValueError naming the
    differing settings otherwise, store untouched).  Returns the counts of this call.
    `encoder` reuses an already built `ClipEncoder(cfg)` (single worker only; benchmarks).
    `scheduler`: address of a Dask scheduler; every video becomes one task on its workers
    (`stages.extract.cluster`; `workers` is then ignored).
    """
    if isinstance(workers, bool) or not isinstance(workers, int) or workers < 1:
        raise StageError(f"workers must be a positive integer, got {workers!r}")
    store_path = Path(store_path)
    items = select_shard(discover_videos(inputs), shard)
    device = cfg.resolve_device()
    provenance = cfg.provenance(_checkpoint_sha(cfg), precision=cfg.resolve_precision(device))
    workers = max(1, min(workers, len(items)))
    if scheduler is not None:
        workers = 2  # no model in this process: the workers build it
    if items and not (store_path / "zarr.json").is_file():
        # a new store records the checkpoint's hash: make sure the checkpoint works first
        if workers == 1 and encoder is None:
            encoder = ClipEncoder(cfg)
        elif workers > 1:
            check_checkpoint(cfg)
    _open_store(store_path, provenance)  # create / check provenance once, before any work
    if scheduler is not None:
        from stages.extract.cluster import run_extract_dask

        return run_extract_dask(cfg, items, store_path, provenance, scheduler, progress)
    if workers == 1:
        return _worker_loop(cfg, items, store_path, provenance, 0, 1, progress, encoder)
    from joblib import Parallel, delayed

    t_start = time.perf_counter()
    store = _open_store(store_path, provenance)
    present = sum(store.is_complete(it.video_id) for it in items)
    parts = Parallel(n_jobs=workers, backend="loky")(
        delayed(_worker_loop)(cfg, items, store_path, provenance, w, workers, progress)
        for w in range(workers)
    )
    total = ExtractSummary()
    for part in parts:
        total.merge(part)
    # workers see each other's videos as present/busy: count against the state before the run
    total.skipped_existing = present
    total.busy = max(0, len(items) - present - total.done - total.failed)
    total.seconds = time.perf_counter() - t_start
    return total
