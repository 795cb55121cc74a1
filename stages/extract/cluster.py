"""Extraction on a Dask cluster (`losa-extract --dask-scheduler ADDRESS`): one task per video.

The scheduler hands each video to a worker; the worker opens the store (which must be on a file
system every worker sees, e.g. NFS / Lustre / a shared volume), takes the video's claim and runs the
ordinary claim → extract → commit loop of `stages.extract.run` on it.  The store's claims keep the
result exactly-once whatever the scheduler does: a task that Dask re-runs (a lost worker, a
speculative copy) finds the video complete or claimed and skips it.  A video that fails is written to
the store's failure log by the worker, as in a single-process run, and the run goes on; an error that
is not the video's fault (the model cannot be built) fails the run.  Each worker process builds the
backbone once and reuses it for all its tasks.
"""
from __future__ import annotations

import json
import threading
from pathlib import Path

from stages.errors import StageError
from stages.extract.config import ExtractConfig

__all__ = ["run_extract_dask"]

_ENCODERS: dict[str, object] = {}
_LOCK = threading.Lock()


def _encoder_for(cfg: ExtractConfig):
    """The worker process's encoder for `cfg`, built on first use (thread-safe)."""
    from stages.extract.run import _build_encoder

    key = json.dumps(cfg.provenance(None), sort_keys=True, default=str) + str(cfg.checkpoint)
    with _LOCK:
        if key not in _ENCODERS:
            _ENCODERS[key] = _build_encoder(cfg)
        return _ENCODERS[key]


def _video_task(cfg: ExtractConfig, item, store_path: str, provenance: dict):
    """One video on a Dask worker; returns its `ExtractSummary`."""
    from stages.extract.run import ExtractSummary, _open_store, _worker_loop

    store = _open_store(Path(store_path), provenance)
    if store.is_complete(item.video_id):  # a finished video costs no model load
        return ExtractSummary(skipped_existing=1)
    return _worker_loop(cfg, [item], Path(store_path), provenance, 0, 1, False, _encoder_for(cfg))


def run_extract_dask(cfg: ExtractConfig, items: list, store_path: Path, provenance: dict, scheduler: str,
                     progress: bool = False, connect_timeout: float = 30.0):
    """Submit one task per item to the Dask scheduler at `scheduler`; returns the merged summary."""
    import time

    try:
        from distributed import Client, as_completed
    except ImportError:
        raise StageError("--dask-scheduler needs dask.distributed: pip install 'losa-pipeline[cluster]'") from None
    from stages.extract.run import ExtractSummary

    t_start = time.perf_counter()
    try:
        client = Client(scheduler, timeout=f"{connect_timeout}s")
    except (OSError, TimeoutError) as exc:
        raise StageError(f"cannot reach the Dask scheduler at {scheduler}: {exc}") from None
    total = ExtractSummary()
    try:
        futures = [client.submit(_video_task, cfg, item, str(store_path), provenance, pure=False,
                                 key=f"losa-extract-{i}-{time.time_ns()}")
                   for i, item in enumerate(items)]
        bar = None
        if progress:
            from tqdm import tqdm

            bar = tqdm(total=len(futures), unit="video", desc="extract[dask]", dynamic_ncols=True)
        for future in as_completed(futures):
            part = future.result()  # a setup error (not a video's) is raised here
            total.merge(part)
            if bar is not None:
                bar.update(1)
        if bar is not None:
            bar.close()
    finally:
        client.close()
    total.seconds = time.perf_counter() - t_start
    return total
