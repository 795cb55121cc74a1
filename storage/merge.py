"""Merge per-shard activation stores into one (`losa-store merge OUT SHARD...`).

For object storage (S3, GCS, Azure blobs), which has no ``flock`` and no atomic rename, shards do
not share one store: each shard ``i/n`` extracts into its OWN store on the node's local disk
(``losa-extract --shard i/n --store shard-i.zarr``), which is then uploaded as it is; nothing is ever
written concurrently.  `merge_stores` then copies every complete video of every shard into one
store: the provenance of all shards must be identical (`ProvenanceMismatch` names the differing
keys otherwise, nothing written), values are copied exactly (float16 / bfloat16 round-trip
bit-identically through the float32 read), named features (``fc_norm``) come along, and a video
present in several shards must hold identical data there (else `StoreError`).  A failure recorded
in one shard and completed in none is recorded in the merged store.  The merge is resumable: videos
already in the output are skipped.
"""
from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from storage.reader import ActivationReader, StoreError, check_provenance, open_store
from storage.zarr_store import ZarrActivationStore, write_video

__all__ = ["MergeSummary", "merge_stores"]


@dataclass
class MergeSummary:
    """What one merge did."""

    copied: int = 0
    already_present: int = 0
    duplicates: int = 0  # same video (identical data) in more than one shard
    failures: int = 0  # failures carried over (not completed in any shard)
    shards: list[str] = field(default_factory=list)


def _video(reader: ActivationReader, vid: str) -> tuple[dict, dict, np.ndarray, dict, str]:
    """(layers, named features, times, attrs, store dtype) of one stored video."""
    meta = reader._layer_meta(reader._key(vid))  # the stored dtype (float16 / bfloat16 / float32)
    feats = {name: reader.read_feature(vid, name) for name in reader.feature_shapes(vid)}
    return reader.read(vid), feats, reader.times(vid), reader.video_info(vid), next(iter(meta.values())).dtype


def _same(a: dict, b: dict) -> bool:
    return a.keys() == b.keys() and all(np.array_equal(a[k], b[k], equal_nan=True) for k in a)


def merge_stores(out: str | Path, shards: Sequence[str | Path], chunk_steps: int = 256) -> MergeSummary:
    """Copy every complete video of `shards` (store paths) into the Zarr store `out` (see module)."""
    if not shards:
        raise StoreError("merge: give at least one shard store")
    readers = [open_store(s) for s in shards]
    summary = MergeSummary(shards=[str(r.path) for r in readers])
    provenance = readers[0].provenance
    for r in readers[1:]:
        try:
            check_provenance(provenance, r.provenance)
        except StoreError as exc:
            raise type(exc)(f"shard {r.path} differs from {readers[0].path}: {exc}") from None
    dst = ZarrActivationStore.create_or_open(Path(out), provenance)  # checks an existing output too
    seen: dict[str, ActivationReader] = {}
    for reader in readers:
        for vid in reader.videos():
            if vid in seen:
                if not (_same(reader.read(vid), seen[vid].read(vid))
                        and np.array_equal(reader.times(vid), seen[vid].times(vid))):
                    raise StoreError(f"video {vid!r} differs between shards {seen[vid].path} and {reader.path}")
                summary.duplicates += 1
                continue
            seen[vid] = reader
            if dst.is_complete(vid):
                summary.already_present += 1
                continue
            arrays, feats, times, attrs, dtype = _video(reader, vid)
            attrs = {k: v for k, v in attrs.items() if k not in ("video_id", "num_steps")}
            if write_video(dst, vid, arrays, times, attrs, chunk_steps=chunk_steps, dtype=dtype,
                           features=feats or None):
                summary.copied += 1
    for reader in readers:
        for failure in reader.failures():
            vid = str(failure["video_id"])
            if vid not in seen and not dst.is_complete(vid):
                dst.record_failure(vid, str(failure.get("source", "")), str(failure.get("reason", "")))
                summary.failures += 1
    return summary
