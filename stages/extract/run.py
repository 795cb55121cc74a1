"""Extraction stage: videos → frozen VideoMAEv2 block activations in a resumable Zarr store.

Per video: claim (file lock) → probe → decode in a background thread (prefetch 2 batches) →
backbone forward under `torch.inference_mode()` → `pool_tokens` → cast to the store dtype → a
writer thread writes whole time chunks → atomic commit with the centre time of every step.
A video that fails (unreadable file, decoder error, ...) is recorded under `failures/` and the run
goes on; a rerun skips complete videos and retries the rest.  Several processes (`workers`, or
independent `losa-extract` runs / shards) may share one store: the claims guarantee that every
video is extracted exactly once.  Same device and dtype → bit-identical stored values on rerun.
"""

from __future__ import annotations

import contextlib
import hashlib
import os
import queue
import threading
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
from stages.extract.failures import record_video_failure
from stages.extract.timing import frame_start_times, step_times
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
]

VIDEO_SUFFIXES = (".mp4", ".mkv", ".avi", ".webm", ".mov", ".m4v", ".mpg", ".mpeg")


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


@dataclass(frozen=True)
class VideoItem:
    """One input video: its id in the store and its file."""

    video_id: str
    path: Path


# ------------------------------------------------------------------------------------ discovery
def _is_hidden(rel: Path) -> bool:
    return any(part.startswith(".") for part in rel.parts)


def discover_videos(inputs: Path | str | Sequence[Path | str]) -> list[VideoItem]:
    """Expand files and folders into `VideoItem`s sorted by id.

    A folder is searched recursively for files with a video suffix (hidden files and folders are
    skipped); id = path relative to the folder without suffix, '/'-separated.  A file given
    explicitly is always taken (whatever its suffix, so a bad file becomes a recorded failure);
    its id is its name without suffix.  Name bytes that are not UTF-8 become ``\\xNN`` in the id
    (`storable_id`); every id has a store key (`storage.safe_key`, hashed when over-long), so no
    file name can stop a run.  Raises FileNotFoundError for a missing input and StageError when
    two inputs map to the same id.
    """
    if isinstance(inputs, (str, os.PathLike)):
        inputs = [inputs]
    items: dict[str, VideoItem] = {}

    def add(video_id: str, path: Path) -> None:
        video_id = storable_id(video_id)
        if video_id in items and items[video_id].path.resolve() != path.resolve():
            raise StageError(
                f"two inputs share the video id {video_id!r}: {items[video_id].path} and {path}"
            )
        items[video_id] = VideoItem(video_id, path)

    for raw in inputs:
        root = Path(raw)
        if root.is_dir():
            for path in sorted(root.rglob("*")):
                rel = path.relative_to(root)
                if path.suffix.lower() in VIDEO_SUFFIXES and path.is_file() and not _is_hidden(rel):
                    add(rel.with_suffix("").as_posix(), path)
        elif root.exists():
            add(root.name[: -len(root.suffix)] if root.suffix else root.name, root)
        else:
            raise FileNotFoundError(f"input not found: {root}")
    return [items[k] for k in sorted(items)]


def storable_id(video_id: str) -> str:
    """`video_id` as a valid Unicode string: bytes of a file name that are not UTF-8 (Python keeps
    them as lone surrogates, which JSON, the store attrs and the terminal refuse) are written as
    ``\\xNN``, so such a file is extracted like any other instead of failing where it is logged."""
    try:
        video_id.encode("utf-8")
        return video_id
    except UnicodeEncodeError:
        return os.fsencode(video_id).decode("utf-8", "backslashreplace")


def _stable_bucket(video_id: str, n: int) -> int:
    # surrogatepass: a file name with undecodable bytes (lone surrogates) must not stop the run
    digest = hashlib.sha1(video_id.encode("utf-8", "surrogatepass")).digest()
    return int.from_bytes(digest[:8], "big") % n


def select_shard(items: Sequence[VideoItem], shard: tuple[int, int]) -> list[VideoItem]:
    """Videos of shard i of n: stable hash of the video id mod n (independent of the input list)."""
    index, count = int(shard[0]), int(shard[1])
    if count < 1 or not 0 <= index < count:
        raise StageError(f"shard {index}/{count} is invalid: need 0 <= i < n")
    return [it for it in items if _stable_bucket(it.video_id, count) == index]


# -------------------------------------------------------------------------- model and writer
class ClipEncoder:
    """Frozen backbone on its device: uint8 clips → pooled activations in the store dtype.

    `__call__(clips uint8 [n, F, H, W, 3])` returns {layer: np.ndarray [n, cells, C]}: float16, or
    raw bfloat16 bits as uint16 (the store's representation).  Under fp32 precision TF32 is off.
    With `cfg.reference_feature` the result also holds {"fc_norm": float32 [n, C]}, VideoMAEv2's
    clip feature (the last block is then run even when it is not stored).  Resize
    "squash-bilinear" scales the native-size float frames here, after normalisation.
    """

    def __init__(self, cfg: ExtractConfig) -> None:
        import torch

        from losa.encoder.backbone import build_backbone

        self.cfg = cfg
        self.device = torch.device(cfg.resolve_device())
        self.device_name = (torch.cuda.get_device_name(self.device)
                            if self.device.type == "cuda" else self.device.type)
        self.precision = cfg.resolve_precision(self.device.type)
        model = build_backbone(cfg.preset, num_frames=cfg.sampling.frames_per_clip,
                               img_size=cfg.resolution, seed=cfg.seed, pos_table=cfg.pos_table)
        if cfg.checkpoint is not None:
            from losa.encoder.checkpoint import load_official_checkpoint

            _fit_checkpoint(cfg, load_official_checkpoint, model)
        # The pixel normalisation is folded into the patch embedding (exact: a linear conv with
        # stride = kernel, no padding): the model takes 0..255 values, converted once per frame.
        # Not for "squash-bilinear", whose reference recipe resizes the normalised float frames.
        self.folded = cfg.resize != "squash-bilinear"
        if self.folded:
            from losa.encoder.sampling import input_affine

            model.fold_input_affine(*input_affine(cfg.norm))
        self.model = model.to(self.device).eval()
        self.layers = cfg.all_layers
        depth = cfg.backbone.depth
        self.run_layers = sorted({*self.layers, depth}) if cfg.reference_feature else self.layers
        self.mean_layer = _cell_mean_layer(cfg)
        self.autocast_dtype = {"bf16": torch.bfloat16, "fp16": torch.float16}.get(self.precision)

    def _precision_context(self):
        import torch

        if self.autocast_dtype is not None:
            return torch.autocast(self.device.type, dtype=self.autocast_dtype)
        if self.device.type == "cuda":  # true fp32: no TF32 in matmuls/convolutions
            return _no_tf32()
        return contextlib.nullcontext()

    def __call__(self, clips: np.ndarray) -> dict[int, np.ndarray]:
        """uint8 clips [n, F, H, W, 3] → {layer: [n, cells, C]} (see `encode`)."""
        n, f = clips.shape[:2]
        return self.encode(clips.reshape(n * f, *clips.shape[2:]), np.arange(n * f).reshape(n, f))

    def _input(self, frames: np.ndarray, index: np.ndarray):
        """Distinct uint8 frames [U, H, W, 3] + clip index [n, F] → model input [n, 3, F, H, W].

        Only the U distinct frames cross to the device.  Folded: the clips are gathered as uint8 and
        converted in the one copy that lays them out (no normalisation pass at all).  Unfolded
        ("squash-bilinear"): each frame is normalised once, then the clips are gathered."""
        import torch

        from losa.encoder.sampling import normalise

        x = torch.from_numpy(np.ascontiguousarray(frames))
        idx = torch.from_numpy(np.ascontiguousarray(index, dtype=np.int64))
        if self.device.type == "cuda":
            x = x.pin_memory().to(self.device, non_blocking=True)
            idx = idx.to(self.device, non_blocking=True)
        if self.folded:
            # normalisation folded into the weights: gather the uint8 clips (1 byte a value), then
            # ONE pass converts to the compute dtype (0..255 are exact in bf16 / fp16) and lays out
            # [n, 3, F, H, W]
            src = x[idx].permute(0, 4, 1, 2, 3)                              # uint8 view
            clips = torch.empty(src.shape, dtype=self.autocast_dtype or torch.float32, device=x.device)
            return clips.copy_(src)
        x = normalise(x, self.cfg.norm)                                      # [3, U, H, W], once a frame
        clips = x[:, idx].transpose(0, 1)                                    # [n, 3, F, H, W]
        if self.cfg.resize == "squash-bilinear":
            clips = _squash_bilinear(clips, self.cfg.resolution)
        return clips.contiguous()

    def encode(self, frames: np.ndarray, index: np.ndarray) -> dict[int, np.ndarray]:
        """Distinct uint8 frames [U, H, W, 3] and clip index [n, F] into them (`iter_frame_batches`)
        → {layer: np.ndarray [n, cells, C]} in the store representation."""
        import torch

        from losa.encoder.tokens import pool_tokens

        with torch.inference_mode():
            x = self._input(frames, index)
            with self._precision_context():
                tokens = self.model.forward_layers(x, self.run_layers)
            out: dict = {}
            if self.cfg.reference_feature:
                from stages.extract.config import REFERENCE_FEATURE

                feature = self.model.pool_feature(tokens[self.cfg.backbone.depth])
                out[REFERENCE_FEATURE] = feature.float().cpu().numpy()
            for layer, t in tokens.items():
                if layer not in self.layers:
                    continue
                pooled = pool_tokens(t, self.cfg.grid, self.cfg.temporal).float()
                out[layer] = self._to_store_dtype(pooled, layer)
                if layer == self.mean_layer:  # mean of the cells AS STORED (what a reader would get)
                    from storage.features import cell_mean_feature
                    from storage.reader import decode_rows

                    stored = decode_rows(out[layer], self.cfg.store_dtype)
                    out[cell_mean_feature(layer)] = stored.mean(axis=1, dtype=np.float32)
        return out

    def _to_store_dtype(self, x, layer: int) -> np.ndarray:
        import torch

        if self.cfg.store_dtype == "bfloat16":
            return x.to(torch.bfloat16).view(torch.int16).cpu().numpy().view(np.uint16)
        half = x.to(torch.float16)
        # one reduction: values below 65520 round to finite float16 (NaN compares False, as before)
        if float(x.abs().amax()) >= 65520.0 and bool((torch.isinf(half) & torch.isfinite(x)).any()):
            peak = float(x[torch.isfinite(x)].abs().max())
            raise StageError(f"layer {layer}: activations up to {peak:.4g} overflow float16 "
                             "(max 65504); extract with store dtype bfloat16")
        return half.cpu().numpy()


def _cell_mean_layer(cfg: ExtractConfig) -> int | None:
    """The layer whose cell mean is stored as a feature: the last stored one, when cells > 1."""
    return max(cfg.all_layers) if cfg.cells > 1 else None


def _stored_features(cfg: ExtractConfig) -> dict[str, int]:
    """Named features written next to the layers: {"fc_norm": C} with the reference feature, and
    the last layer's cell mean {"cellmean_XX": C} when a step has several cells."""
    from stages.extract.config import REFERENCE_FEATURE
    from storage.features import cell_mean_feature

    out = {REFERENCE_FEATURE: cfg.backbone.embed_dim} if cfg.reference_feature else {}
    if _cell_mean_layer(cfg) is not None:
        out[cell_mean_feature(_cell_mean_layer(cfg))] = cfg.backbone.embed_dim
    return out


def _squash_bilinear(x, resolution: int):
    """Float clips [n, 3, T, H, W] → [n, 3, T, res, res], bilinear, align_corners False, no
    antialias (VideoMAEv2's TAD extractor scales its /255 frames this way)."""
    import torch.nn.functional as F

    n, c, t, h, w = x.shape
    if (h, w) == (resolution, resolution):
        return x
    y = F.interpolate(x.reshape(n, c * t, h, w), size=(resolution, resolution), mode="bilinear",
                      align_corners=False)
    return y.reshape(n, c, t, resolution, resolution)


def _load_state(path: Path) -> dict:
    """torch.load a checkpoint (weights only); one line naming the file when it is not one."""
    from stages.extract.weights import load_checkpoint

    return dict(load_checkpoint(path))


def _fit_checkpoint(cfg: ExtractConfig, fit, model) -> None:
    """`fit(model, state_dict, require_fc_norm)` (load or convert); its error names the file."""
    from losa.encoder.checkpoint import CheckpointError

    state = _load_state(cfg.checkpoint)
    try:
        fit(model, state, cfg.reference_feature)
    except CheckpointError as exc:
        raise StageError(f"checkpoint {cfg.checkpoint}: {exc}") from None


def check_checkpoint(cfg: ExtractConfig) -> None:
    """Raise ValueError if `cfg.checkpoint` cannot be loaded into the backbone (no weights are
    materialised: the model is built on the meta device)."""
    if cfg.checkpoint is None:
        return
    import torch

    from losa.encoder.backbone import VideoViT
    from losa.encoder.checkpoint import convert_official_state_dict

    with torch.device("meta"):
        model = VideoViT(cfg.backbone, num_frames=cfg.sampling.frames_per_clip, img_size=cfg.resolution)
    _fit_checkpoint(cfg, lambda m, sd, need: convert_official_state_dict(sd, m, need), model)


@contextlib.contextmanager
def _no_tf32():
    import torch

    saved = torch.backends.cuda.matmul.allow_tf32, torch.backends.cudnn.allow_tf32
    torch.backends.cuda.matmul.allow_tf32 = torch.backends.cudnn.allow_tf32 = False
    try:
        yield
    finally:
        torch.backends.cuda.matmul.allow_tf32, torch.backends.cudnn.allow_tf32 = saved


class ChunkedWriter:
    """Writer thread: consecutive row blocks in → whole `chunk_steps` blocks out to a VideoWriter.

    Writing chunk-aligned blocks means every Zarr chunk is encoded once (no read-modify-write).
    Use as a context manager; leaving it normally flushes the tail and re-raises writer errors.
    """

    def __init__(self, writer, num_steps: int, chunk_steps: int, queue_size: int = 4) -> None:
        self.writer, self.num_steps, self.chunk_steps = writer, num_steps, chunk_steps
        self.rows_written = 0
        self._queue: queue.Queue = queue.Queue(maxsize=queue_size)
        self._error: BaseException | None = None
        self._pending: list[dict[int, np.ndarray]] = []
        self._pending_rows = 0
        self._next_row = 0
        self._thread = threading.Thread(target=self._run, name="store-writer", daemon=True)
        self._thread.start()

    def put(self, t0: int, arrays: dict[int, np.ndarray]) -> None:
        """Queue rows t0:t0+n (must follow the previous block); raises a writer-thread error."""
        if t0 != self._next_row:
            raise RuntimeError(f"rows must arrive in order: expected {self._next_row}, got {t0}")
        self._next_row += len(next(iter(arrays.values())))
        if self._next_row > self.num_steps:
            raise RuntimeError(f"got {self._next_row} rows for a video of {self.num_steps} steps")
        while True:
            if self._error is not None:
                raise self._error
            try:
                self._queue.put(arrays, timeout=0.1)
                return
            except queue.Full:
                continue

    def _flush(self, final: bool) -> None:
        rows = self._pending_rows if final else self._pending_rows // self.chunk_steps * self.chunk_steps
        if rows == 0:
            return
        merged = {k: np.concatenate([p[k] for p in self._pending]) for k in self._pending[0]}
        self.writer.write(self.rows_written, {k: v[:rows] for k, v in merged.items()})
        self.rows_written += rows
        rest = {k: v[rows:] for k, v in merged.items()}
        self._pending = [rest] if self._pending_rows > rows else []
        self._pending_rows -= rows

    def _run(self) -> None:
        ended = False  # the end-of-stream marker has been consumed
        try:
            while (arrays := self._queue.get()) is not None:
                self._pending.append(arrays)
                self._pending_rows += len(next(iter(arrays.values())))
                if self._pending_rows >= self.chunk_steps:
                    self._flush(final=False)
            ended = True
            self._flush(final=True)
        except BaseException as exc:
            self._error = exc
            # drain so the producer never blocks; the marker comes once, so stop if it came already
            while not ended and self._queue.get() is not None:
                pass

    def __enter__(self) -> ChunkedWriter:
        return self

    def __exit__(self, exc_type, exc, tb) -> None:
        while self._thread.is_alive():
            try:
                self._queue.put(None, timeout=0.1)
                break
            except queue.Full:
                continue
        while self._thread.is_alive():  # the thread exits after the marker, whatever happened
            self._thread.join(timeout=0.1)
        if exc_type is None and self._error is not None:
            raise self._error


# ----------------------------------------------------------------------------------- the loop
def _open_store(store_path: Path, provenance: dict):
    from storage.zarr_store import ZarrActivationStore

    return ZarrActivationStore.create_or_open(store_path, provenance)


def _checkpoint_sha(cfg: ExtractConfig) -> str | None:
    return sha256_file(cfg.checkpoint) if cfg.checkpoint is not None else None


def _extract_one(
    store, item: VideoItem, encoder: ClipEncoder, cfg: ExtractConfig, decode_threads: int
) -> int:
    """Extract one claimed video into the store; returns its number of clips."""
    t_start = time.perf_counter()
    info: VideoInfo = probe_video(item.path)
    starts = cfg.sampling.clip_starts(info.num_frames)
    # clip centres: frame rate, or presentation timestamps for variable-frame-rate files
    timed = step_times(starts, cfg.sampling.span(), info.num_frames, info.fps,
                       frame_start_times(item.path, info.num_frames))
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
        batches = BackgroundIterator(
            iter_frame_batches(item.path, cfg.sampling, cfg.resolution, cfg.resize,
                               cfg.batch_clips, info=info, threads=decode_threads),
            prefetch=2,
        )
        with batches, ChunkedWriter(writer, num_steps, cfg.chunk_steps) as sink:
            for t0, frames, index in batches:
                sink.put(t0, encoder.encode(frames, index))
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
    try:
        for item in order:
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
                            summary.clips += _extract_one(store, item, encoder, cfg, decode_threads)
                            summary.done += 1
            except _SetupFailure as exc:  # not the video's fault: stop with the encoder's error
                raise exc.error from None
            except Exception as exc:  # one bad video (or name) must not stop the run
                summary.stopped = record_video_failure(store, item.video_id, item.path, exc, summary)
            if summary.stopped:
                break
            if bar is not None:
                elapsed = time.perf_counter() - t_start
                bar.set_postfix(clips_s=f"{summary.clips / max(elapsed, 1e-9):.1f}",
                                failed=summary.failed, refresh=False)
                bar.update(1)
    finally:
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
