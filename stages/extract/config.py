"""Extraction settings (`ExtractConfig`), their validation and the provenance recorded in a store.

Every choice that changes the stored numbers (backbone and weights, tapped layers, clip sampling,
resolution and resize, pixel normalisation, token pooling, store dtype and compute precision) is
part of `ExtractConfig.provenance`; a store refuses to mix features made with different settings.
Choices that only change speed (batch size, chunking, device, workers) are not recorded there.
"""

from __future__ import annotations

import dataclasses
import hashlib
import os
from importlib import metadata
from pathlib import Path
from typing import TYPE_CHECKING, Any, Literal, get_args

from pydantic import field_validator

from losa.encoder.clips import ClipSampling
from losa.schema import knob, settings
from stages.errors import StageError

if TYPE_CHECKING:
    from losa.encoder.backbone import BackboneConfig

__all__ = [
    "ExtractConfig",
    "ExtractConfigError",
    "FEATURE_DEFINITION",
    "POS_TABLES",
    "REFERENCE_FEATURE",
    "REFERENCE_FEATURE_DEFINITION",
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
#: Name of the stored reference clip feature and how it is made (VideoMAEv2's TAD features).
REFERENCE_FEATURE = "fc_norm"
REFERENCE_FEATURE_DEFINITION = ("fc_norm(mean over all tokens of the last block), the checkpoint's "
                                "fc_norm LayerNorm (eps 1e-6), computed in float32, stored float32 [T, C]")


class ExtractConfigError(StageError):
    """An invalid extraction setting; the message names the setting and the accepted values."""


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


@settings(what="extract", error=ExtractConfigError)
class ExtractConfig:
    """How to turn videos into stored activations (see docs/DESIGN.md §3).

    `layers` are 1-based block indices; with `include_last` the final block is stored too.
    `checkpoint` None means deterministic random weights from `seed` (useful for tests only).
    """

    preset: str = knob("vit-g", "Backbone preset: tiny, vit-s, vit-b, vit-l, vit-h or vit-g.")
    checkpoint: Path | None = knob(None, "Official VideoMAEv2 checkpoint (.pth); none: random weights (tests only).")
    seed: int = knob(0, "Seed of the random weights (no checkpoint).")
    layers: list[int] = knob(default_factory=lambda: [8, 16, 24, 32],
                             help="1-based blocks to store, e.g. 8,16,24,32; auto = 1/5..4/5 of the depth.")
    include_last: bool = knob(True, "Also store the final block.", flag="last_layer")
    sampling: ClipSampling = knob(default_factory=ClipSampling, help="Clip sampling (frames, frame_step, clip_stride).")
    resolution: int = knob(224, "Square input size (multiple of the patch size).", ge=1)
    resize: Literal["short-crop", "squash", "squash-bilinear"] = knob(
        "short-crop", "short-crop: short side to resolution then centre crop; squash: both sides (antialiased); "
                      "squash-bilinear: as VideoMAEv2's TAD extraction script.")
    norm: Literal["imagenet", "255"] = knob(
        "imagenet", "imagenet: /255 + mean/std; 255: /255 only (released VideoMAEv2 THUMOS features).")
    pos_table: Literal["official", "trilinear", "bicubic"] = knob(
        "official", "Position table at other sizes: official (fresh sin-cos), or the 224 table resized.")
    reference_feature: bool = knob(False, "Also store VideoMAEv2's clip feature (fc_norm of the token mean).")
    temporal: Literal["pool", "keep"] = knob("pool", "Average a clip's tubelet slots, or keep them as cells.")
    grid: Literal[1, 2, 4] = knob(1, "Spatial cells per side kept per step.")
    store_dtype: Literal["float16", "bfloat16"] = knob(
        "float16", "Stored dtype (bfloat16 if activations exceed the float16 range).", flag="dtype")
    precision: Literal["auto", "fp32", "bf16", "fp16"] = knob(
        "auto", "Compute precision; auto = bf16 autocast on CUDA, fp32 on CPU.")
    batch_clips: int = knob(32, "Clips per forward pass.", ge=1)
    chunk_steps: int = knob(256, "Time steps per Zarr chunk.", ge=1)
    device: str = knob("auto", "auto, cpu, cuda, cuda:N or mps.")

    @field_validator("layers", mode="before")
    @classmethod
    def _integer_layers(cls, value: Any) -> Any:
        for layer in value or ():
            if isinstance(layer, bool) or not isinstance(layer, int):
                raise ExtractConfigError(f"layer {layer!r} is not an integer block index")
        return value

    def __post_init__(self) -> None:
        self._check()

    # ------------------------------------------------------------------ validation and geometry
    @property
    def backbone(self) -> BackboneConfig:
        """The preset's architecture (raises ExtractConfigError for an unknown preset)."""
        from losa.encoder.backbone import get_preset

        try:
            return get_preset(self.preset)
        except ValueError as exc:
            raise ExtractConfigError(str(exc)) from None

    def validate(self) -> None:
        """Raise ExtractConfigError naming the first invalid setting (also after fields were assigned)."""
        type(self)(**{f.name: getattr(self, f.name) for f in dataclasses.fields(self)})

    def _check(self) -> None:
        """Rules across settings and the preset (each field's type and range: the schema)."""
        bb = self.backbone
        if self.resolution % bb.patch_size:
            raise ExtractConfigError(
                f"resolution {self.resolution} is not a multiple of the {bb.name} patch size "
                f"{bb.patch_size} (try {max(1, round(self.resolution / bb.patch_size)) * bb.patch_size})"
            )
        if self.grid > self.resolution // bb.patch_size:
            raise ExtractConfigError(
                f"grid {self.grid} is finer than the {self.resolution // bb.patch_size}x"
                f"{self.resolution // bb.patch_size} token grid at resolution {self.resolution}"
            )
        s = self.sampling
        if s.frames_per_clip % bb.tubelet_size:
            raise ExtractConfigError(
                f"frames per clip {s.frames_per_clip} is not a multiple of the {bb.name} tubelet "
                f"size {bb.tubelet_size}"
            )
        seen: set[int] = set()
        for layer in self.layers:
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
            "pos_table": self.pos_table,
            "reference_feature": ({"name": REFERENCE_FEATURE, "definition": REFERENCE_FEATURE_DEFINITION,
                                   "channels": bb.embed_dim} if self.reference_feature else None),
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


def _choices(name: str) -> tuple:
    return get_args(ExtractConfig.__pydantic_fields__[name].annotation)


#: Accepted values of each choice setting (from the schema above).
RESIZE_MODES, NORM_MODES, POS_TABLES, TEMPORAL_MODES, GRIDS, STORE_DTYPES, PRECISIONS = (
    _choices(n) for n in ("resize", "norm", "pos_table", "temporal", "grid", "store_dtype", "precision"))
