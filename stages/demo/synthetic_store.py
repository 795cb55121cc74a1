"""A real activation store filled with synthetic, *learnable* activations (tests and benchmarks).

Every video is Gaussian noise; the steps inside an action of class ``k`` additionally carry
``signal * pattern_k`` in the chosen layers (a fixed random ``[cells, C]`` pattern per class and
layer). A detector trained on the store can therefore localise and classify the actions, and how well
it does is a real measurement. Videos are written with the ordinary store writer
(:func:`storage.write_video`) and the annotations as an ActivityNet JSON, so the whole training path
(store → dataset → model → predictions → evaluation) runs unchanged on them.

Step geometry mimics extraction with 16-frame clips every 4 frames at 30 fps:
``times[i] = (4 i + 8) / 30`` s.
"""
from __future__ import annotations

import json
import math
from dataclasses import dataclass, field
from pathlib import Path
from typing import Sequence

import numpy as np

from storage import ZarrActivationStore, write_video
from stages.errors import StageError

FPS = 30.0
CLIP_STRIDE = 4
FRAMES_PER_CLIP = 16


@dataclass
class SyntheticStore:
    """What :func:`make_synthetic_store` wrote."""

    store: Path
    annotations: Path
    classes: list[str]
    provenance: dict
    videos: dict[str, str] = field(default_factory=dict)  # video id → subset


def _tokens_layout(cells: int, tokens_layout: Sequence[int] | None) -> list[int]:
    if tokens_layout is not None:
        layout = [int(x) for x in tokens_layout]
        if len(layout) != 3 or layout[0] * layout[1] * layout[2] != cells:
            raise StageError(f"tokens_layout {layout} does not multiply to cells={cells}")
        return layout
    g = int(round(math.sqrt(cells)))
    return [1, g, g] if g * g == cells else [cells, 1, 1]


def synthetic_provenance(layers: Sequence[int], cells: int, channels: int, seed: int, signal: float,
                         tokens_layout: Sequence[int] | None = None) -> dict:
    """Provenance recorded in a synthetic store (same keys as extraction provenance)."""
    layout = _tokens_layout(cells, tokens_layout)
    return {
        "backbone": {"preset": "synthetic", "embed_dim": int(channels), "depth": int(max(layers))},
        "checkpoint": {"sha256": "synthetic", "seed": int(seed)},
        "layers": sorted(int(x) for x in layers),
        "last_layer": int(max(layers)),
        "sampling": {"frames_per_clip": FRAMES_PER_CLIP, "frame_step": 1, "clip_stride": CLIP_STRIDE},
        "temporal": "keep" if layout[0] > 1 else "pool",
        "grid": layout[1],
        "tokens_layout": layout,
        "cells": int(cells),
        "channels": int(channels),
        "store_dtype": "float16",
        "feature": "synthetic",
        "synthetic": {"seed": int(seed), "signal": float(signal)},
    }


def step_times(num_steps: int) -> np.ndarray:
    """Centre time (s) of each step for the synthetic clip geometry."""
    return (np.arange(num_steps) * CLIP_STRIDE + FRAMES_PER_CLIP / 2) / FPS


def _place_actions(rng: np.random.Generator, num_steps: int, max_actions: int, min_len: int,
                   max_len: int) -> list[tuple[int, int]]:
    """Non-overlapping [start, end) step ranges with a gap of >= 2 steps between actions."""
    out: list[tuple[int, int]] = []
    for _ in range(max_actions * 20):
        if len(out) >= max_actions:
            break
        length = int(rng.integers(min_len, max_len + 1))
        if length >= num_steps:
            continue
        s = int(rng.integers(0, num_steps - length + 1))
        e = s + length
        if all(e + 2 <= a or s >= b + 2 for a, b in out):
            out.append((s, e))
    return sorted(out)


def make_synthetic_store(
    path: str | Path,
    num_videos: int = 8,
    num_steps: int | tuple[int, int] = 256,
    channels: int = 32,
    layers: Sequence[int] = (4, 8, 12),
    cells: int = 1,
    num_classes: int = 3,
    seed: int = 0,
    signal: float = 1.0,
    signal_layers: Sequence[int] | None = None,
    max_actions: int = 3,
    action_len: tuple[int, int] | None = None,
    val_videos: int = 0,
    tokens_layout: Sequence[int] | None = None,
    annotations_path: str | Path | None = None,
    chunk_steps: int = 256,
) -> SyntheticStore:
    """Write a Zarr store at ``path`` and an ActivityNet JSON (default ``<path>.json``).

    ``num_steps`` is a fixed length or an inclusive ``(min, max)`` range. The last ``val_videos``
    videos are in subset "validation", the others in "training". ``signal_layers`` (default: all)
    carry the class pattern; ``action_len`` is the (min, max) action length in steps (default
    ``(max(4, T//16), max(8, T//5))``).
    """
    if num_videos < 1 or channels < 1 or cells < 1 or num_classes < 1 or not layers:
        raise StageError("num_videos, channels, cells, num_classes and layers must be positive")
    if not 0 <= val_videos < num_videos:
        raise StageError(f"val_videos={val_videos} must be in 0..{num_videos - 1}")
    layers = sorted(int(x) for x in layers)
    carrying = set(layers if signal_layers is None else (int(x) for x in signal_layers))
    rng = np.random.default_rng(seed)
    prov = synthetic_provenance(layers, cells, channels, seed, signal, tokens_layout)
    store = ZarrActivationStore.create_or_open(path, prov)
    classes = [f"class_{k:02d}" for k in range(num_classes)]
    # unit-RMS patterns, one per (class, layer); layers see correlated but different patterns
    base = rng.standard_normal((num_classes, cells, channels))
    patterns = {
        layer: (base + 0.5 * rng.standard_normal(base.shape)) / math.sqrt(1.25) for layer in layers
    }
    database: dict[str, dict] = {}
    subsets: dict[str, str] = {}
    lo, hi = (num_steps, num_steps) if isinstance(num_steps, int) else num_steps
    for v in range(num_videos):
        vid = f"video_{v:04d}"
        steps = int(rng.integers(lo, hi + 1))
        a_lo, a_hi = action_len or (max(4, steps // 16), max(8, steps // 5))
        actions = _place_actions(rng, steps, max_actions, a_lo, min(a_hi, steps - 1))
        labels = [int(rng.integers(0, num_classes)) for _ in actions]
        arrays = {}
        for layer in layers:
            x = rng.standard_normal((steps, cells, channels), dtype=np.float32)
            if layer in carrying:
                for (s, e), k in zip(actions, labels):
                    x[s:e] += signal * patterns[layer][k].astype(np.float32)
            arrays[layer] = x
        times = step_times(steps)
        dt = CLIP_STRIDE / FPS
        num_frames = (steps - 1) * CLIP_STRIDE + FRAMES_PER_CLIP
        duration = num_frames / FPS
        write_video(
            store, vid, arrays, times,
            attrs={"source": "synthetic", "fps": FPS, "num_frames": num_frames,
                   "duration": duration, "num_steps": steps},
            chunk_steps=chunk_steps,
        )
        subset = "validation" if v >= num_videos - val_videos else "training"
        subsets[vid] = subset
        database[vid] = {
            "subset": subset,
            "duration": duration,
            "fps": FPS,
            # action over steps s..e-1 spans step coordinates [s - 0.5, e - 0.5]
            "annotations": [
                {"label": classes[k], "segment": [max(0.0, float(times[0] + (s - 0.5) * dt)),
                                                  float(times[0] + (e - 0.5) * dt)]}
                for (s, e), k in zip(actions, labels)
            ],
        }
    ann_path = Path(annotations_path) if annotations_path else Path(str(path).rstrip("/") + ".json")
    ann_path.parent.mkdir(parents=True, exist_ok=True)
    ann_path.write_text(
        json.dumps({"version": "synthetic", "classes": classes, "database": database}, indent=1),
        encoding="utf-8",
    )
    return SyntheticStore(Path(path), ann_path, classes, prov, subsets)
