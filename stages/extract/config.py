"""Extraction settings (`ExtractConfig`), their validation and the provenance recorded in a store.

Every choice that changes the stored numbers (backbone and weights, tapped layers, clip sampling,
resolution and resize, pixel normalisation, token pooling, store dtype and compute precision) is
part of `ExtractConfig.provenance`; a store refuses to mix features made with different settings.
Choices that only change speed (batch size, chunking, device, workers) are not recorded there.
"""

from __future__ import annotations

import hashlib
import os
from dataclasses import dataclass, field
from importlib import metadata
from pathlib import Path

from losa.encoder.backbone import BackboneConfig, get_preset
from losa.encoder.sampling import ClipSampling

__all__ = [
    "ExtractConfig",
    "ExtractConfigError",
    "FEATURE_DEFINITION",
    "RESIZE_MODES",
    "NORM_MODES",
    "TEMPORAL_MODES",
    "GRIDS",
    "STORE_DTYPES",
    "PRECISIONS",
    "default_layers",
    "package_version",
    "sha256_file",
]

FEATURE_DEFINITION = "raw block outputs (pre-norm)"
RESIZE_MODES = ("short-crop", "squash")
NORM_MODES = ("imagenet", "255")
TEMPORAL_MODES = ("pool", "keep")
GRIDS = (1, 2, 4)
STORE_DTYPES = ("float16", "bfloat16")
PRECISIONS = ("auto", "fp32", "bf16", "fp16")


class ExtractConfigError(ValueError):
    """An invalid extraction setting; the message names the setting and the accepted values."""


def _choice(name: str, value: object, allowed: tuple) -> None:
    if value not in allowed:
        shown = ", ".join(str(a) for a in allowed)
        raise ExtractConfigError(f"{name} {value!r} is not one of: {shown}")


def _positive_int(name: str, value: object) -> None:
    if isinstance(value, bool) or not isinstance(value, int) or value < 1:
        raise ExtractConfigError(f"{name} must be a positive integer, got {value!r}")


def default_layers(depth: int) -> list[int]:
    """Blocks at 1/5, 2/5, 3/5 and 4/5 of the depth (vit-g, 40 blocks → [8, 16, 24, 32], the LoSA
    taps); the last block is added separately by `include_last`."""
    return sorted({max(1, round(depth * k / 5)) for k in (1, 2, 3, 4)} - {depth})


def package_version() -> str:
    """Installed version of the `losa-pipeline` distribution ("unknown" when not installed)."""
    try:
        return metadata.version("losa-pipeline")
    except metadata.PackageNotFoundError:
        return "unknown"


def sha256_file(path: str | os.PathLike, chunk_bytes: int = 1 << 20) -> str:
    """Hex SHA-256 of a file, read in `chunk_bytes` pieces (constant memory)."""
    digest = hashlib.sha256()
    with open(path, "rb") as fh:
        while block := fh.read(chunk_bytes):
            digest.update(block)
    return digest.hexdigest()


@dataclass
class ExtractConfig:
    """How to turn videos into stored activations (see docs/DESIGN.md §3).

    `layers` are 1-based block indices; with `include_last` the final block is stored too.
    `checkpoint` None means deterministic random weights from `seed` (useful for tests only).
    """

    preset: str = "vit-g"
    checkpoint: Path | None = None
    seed: int = 0
    layers: list[int] = field(default_factory=lambda: [8, 16, 24, 32])
    include_last: bool = True
    sampling: ClipSampling = field(default_factory=ClipSampling)
    resolution: int = 224
    resize: str = "short-crop"
    norm: str = "imagenet"
    temporal: str = "pool"
    grid: int = 1
    store_dtype: str = "float16"
    precision: str = "auto"
    batch_clips: int = 32
    chunk_steps: int = 256
    device: str = "auto"

    def __post_init__(self) -> None:
        self.layers = list(self.layers)
        if self.checkpoint is not None:
            self.checkpoint = Path(self.checkpoint)
        self.validate()

    # ------------------------------------------------------------------ validation and geometry
    @property
    def backbone(self) -> BackboneConfig:
        """The preset's architecture (raises ExtractConfigError for an unknown preset)."""
        try:
            return get_preset(self.preset)
        except ValueError as exc:
            raise ExtractConfigError(str(exc)) from None

    def validate(self) -> None:
        """Raise ExtractConfigError naming the first invalid setting."""
        bb = self.backbone
        _positive_int("resolution", self.resolution)
        if self.resolution % bb.patch_size:
            raise ExtractConfigError(
                f"resolution {self.resolution} is not a multiple of the {bb.name} patch size "
                f"{bb.patch_size} (try {max(1, round(self.resolution / bb.patch_size)) * bb.patch_size})"
            )
        _choice("resize", self.resize, RESIZE_MODES)
        _choice("norm", self.norm, NORM_MODES)
        _choice("temporal", self.temporal, TEMPORAL_MODES)
        _choice("grid", self.grid, GRIDS)
        if self.grid > self.resolution // bb.patch_size:
            raise ExtractConfigError(
                f"grid {self.grid} is finer than the {self.resolution // bb.patch_size}x"
                f"{self.resolution // bb.patch_size} token grid at resolution {self.resolution}"
            )
        _choice("store dtype", self.store_dtype, STORE_DTYPES)
        _choice("precision", self.precision, PRECISIONS)
        for name in ("batch_clips", "chunk_steps"):
            _positive_int(name, getattr(self, name))
        if isinstance(self.seed, bool) or not isinstance(self.seed, int):
            raise ExtractConfigError(f"seed must be an integer, got {self.seed!r}")
        s = self.sampling
        for name in ("frames_per_clip", "frame_step", "clip_stride"):
            _positive_int(name.replace("_", "-"), getattr(s, name))
        if s.frames_per_clip % bb.tubelet_size:
            raise ExtractConfigError(
                f"frames per clip {s.frames_per_clip} is not a multiple of the {bb.name} tubelet "
                f"size {bb.tubelet_size}"
            )
        seen: set[int] = set()
        for layer in self.layers:
            if isinstance(layer, bool) or not isinstance(layer, int):
                raise ExtractConfigError(f"layer {layer!r} is not an integer block index")
            if not 1 <= layer <= bb.depth:
                raise ExtractConfigError(f"layer {layer} out of range 1..{bb.depth} for {bb.name}")
            if layer in seen:
                raise ExtractConfigError(f"layer {layer} is listed twice")
            seen.add(layer)
        if not self.layers and not self.include_last:
            raise ExtractConfigError("no layers to extract: give --layers or keep the last layer")
        if self.checkpoint is not None and not self.checkpoint.is_file():
            raise FileNotFoundError(f"checkpoint not found: {self.checkpoint}")
        dev = str(self.device)
        if not (dev in ("auto", "cpu", "cuda", "mps") or dev.startswith("cuda:")):
            raise ExtractConfigError(f"device {dev!r} is not one of: auto, cpu, cuda, cuda:N, mps")

    @property
    def all_layers(self) -> list[int]:
        """Sorted layers that are stored (the requested ones plus the last block by default)."""
        wanted = set(self.layers)
        if self.include_last:
            wanted.add(self.backbone.depth)
        return sorted(wanted)

    @property
    def tokens_layout(self) -> list[int]:
        """[t_sub, g, g]: cells per step are t_sub * g * g, ordered t-major."""
        t_sub = self.sampling.frames_per_clip // self.backbone.tubelet_size
        return [t_sub if self.temporal == "keep" else 1, self.grid, self.grid]

    @property
    def cells(self) -> int:
        """Number of token cells stored per step."""
        t, g, _ = self.tokens_layout
        return t * g * g

    def resolve_device(self) -> str:
        """Concrete torch device string ("auto" → "cuda" when available, else "cpu")."""
        if self.device != "auto":
            return self.device
        import torch

        return "cuda" if torch.cuda.is_available() else "cpu"

    def resolve_precision(self, device: str) -> str:
        """Concrete compute precision: "auto" → bf16 on CUDA, fp32 elsewhere."""
        if self.precision != "auto":
            return self.precision
        return "bf16" if str(device).startswith("cuda") else "fp32"

    # --------------------------------------------------------------------------- provenance
    def provenance(self, checkpoint_sha256: str | None, precision: str | None = None) -> dict:
        """JSON dict recorded in the store root; stores refuse to mix different provenances.

        `checkpoint_sha256` None means random weights (the seed is then recorded).  `precision` is
        the resolved compute precision (defaults to the configured value).
        """
        bb = self.backbone
        weights = (
            {"sha256": checkpoint_sha256}
            if checkpoint_sha256
            else {"sha256": "random", "seed": int(self.seed)}
        )
        return {
            "backbone": {"preset": bb.name, **bb.to_dict()},
            "checkpoint": weights,
            "layers": self.all_layers,
            "last_layer": bb.depth if self.include_last else None,
            "sampling": self.sampling.to_dict(),
            "resolution": int(self.resolution),
            "resize": self.resize,
            "norm": self.norm,
            "temporal": self.temporal,
            "grid": int(self.grid),
            "tokens_layout": self.tokens_layout,
            "cells": self.cells,
            "channels": bb.embed_dim,
            "store_dtype": self.store_dtype,
            "precision": precision or self.precision,
            "feature": FEATURE_DEFINITION,
            "package_version": package_version(),
        }
