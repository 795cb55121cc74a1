"""From items to batches: training windows of at most ``max_seq_len`` steps (`truncate_window`,
ActionFormer ``truncate_feats``: actions keep their clipped part when at least ``trunc_thresh`` of
their length lies in the window, and the window is re-drawn until it holds an action), batches of
similar length for inference, and `Collate`, which pads a batch to a multiple of the feature
pyramid's largest stride with a mask.
"""
from __future__ import annotations

from typing import Any, Sequence

import numpy as np
import torch


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
