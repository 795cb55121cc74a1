"""Model settings (`LoSAConfig`), torch-free so the CLIs can build their options without torch.

Each field is a knob (see `losa.schema`): type, default, range and help are written here once.
Fields marked ``cli=False`` are read from the activation store when training (channels, cell
layout) or from the annotations (classes).
"""
from __future__ import annotations

from typing import Literal

from losa.errors import LosaError
from losa.head.config import HeadConfig
from losa.schema import knob, settings

__all__ = ["ADAPTER_CHOICES", "MODES", "LoSAConfig"]

MODES = ("losa", "head-only", "side")
ADAPTER_CHOICES = {"both": ("long", "short"), "long": ("long",), "short": ("short",)}


@settings(what="model", error=LosaError, frozen=True)
class LoSAConfig:
    """Model hyper-parameters; ``to_dict()`` / ``from_dict()`` round-trip through JSON checkpoints.

    ``tapped_layers`` / ``last_layer`` are 1-based backbone block indices (as stored, ``layer_%02d``);
    ``cells = t_sub * grid * grid`` tokens per step; ``adapter_dim`` None means ``channels // 4``;
    ``short_window`` is the half-width (in steps) of the short adapter's window; ``long_window`` None
    means global attention in the long adapter, else a band of that half-width.
    """

    mode: Literal["losa", "head-only", "side"] = knob(
        "losa", "losa: long/short adapters + gated fusion; head-only: last layer only; side: AdaTAD side adapters.")
    tapped_layers: tuple[int, ...] = knob((), "Tapped layers, e.g. 8,16,24 (auto: every stored layer except the "
                                              "last).", flag="layers")
    last_layer: int = knob(12, "Last layer (default when training: the deepest stored).", ge=1)
    channels: int = knob(768, "Feature width C (from the store).", ge=1, cli=False)
    cells: int = knob(1, "Token cells per step (from the store).", ge=1, cli=False)
    grid: int = knob(1, "Spatial cells per side (from the store).", ge=1, cli=False)
    t_sub: int = knob(1, "Temporal cells per step (from the store).", ge=1, cli=False)
    num_classes: int = knob(20, "Action classes (from the annotations).", ge=1, cli=False)
    adapters: Literal["both", "long", "short"] = knob("both", "Adapter branches on every tapped layer.")
    adapter_dim: int | None = knob(None, "Adapter width d (none: channels // 4).", ge=1)
    adapter_heads: int = knob(4, "Attention heads of the adapters (divide adapter_dim).", ge=1)
    short_window: int = knob(2, "Half-width in steps of the short-range adapter's window.", ge=0)
    short_mode: Literal["spacetime", "pooled"] = knob(
        "spacetime", "Short-range adapter design: spacetime (cell positions + 3-D conv: sees motion "
                     "direction) or pooled (the first design, for ablation).")
    short_pool: Literal["cells", "mean"] = knob(
        "cells", "How the spacetime short adapter pools a step's cells into its query: cells = learned "
                 "weights per cell and channel (initialised to the mean; a position-aware readout, so a "
                 "pattern and its mirror image differ linearly) or mean (ablation).  The pooled design "
                 "always takes the mean.")
    long_window: int | None = knob(None, "Half-width of the long-range adapter's band (none: global).", ge=0)
    long_mlp_ratio: float = knob(2.0, "MLP ratio of the long-range adapter.", gt=0)
    long_context: int | None = knob(
        None, "Steps the long-range adapter attends over at once; longer inputs run in overlapping "
              "windows of this length, stitched (training sets it to max_seq_len so inference sees "
              "the context training saw; none: the whole input).", ge=1)
    fusion: Literal["gated", "sigmoid", "sum", "concat"] = knob("gated", "How adapter outputs merge into the "
                                                                         "last layer.")
    dropout: float = knob(0.0, "Dropout in the adapters.", ge=0, lt=1)
    input_norm: Literal["none", "sequence"] = knob(
        "none", "sequence: subtract each video's mean feature per layer first (removes per-video offsets, "
                "e.g. of a random-weight backbone); none: features as stored.")
    base_feature: Literal["last-layer", "fc_norm"] = knob(
        "last-layer", "What the head (and the fusion base) reads: last-layer = the last block's cell mean "
                      "as stored (raw residual stream); fc_norm = the stored reference feature "
                      "fc_norm(mean token) of VideoMAEv2's TAD recipe (store extracted with "
                      "reference_feature).")
    head: HeadConfig = knob(default_factory=HeadConfig, help="ActionFormer head settings.")

    def __post_init__(self) -> None:
        dim = self.dim
        checks = [
            ("tapped_layers", self.mode == "head-only" or len(self.tapped_layers) > 0),
            ("tapped_layers", len(set(self.tapped_layers)) == len(self.tapped_layers)),
            ("tapped_layers", all(v >= 1 for v in self.tapped_layers)),
            ("cells", self.cells == self.t_sub * self.grid * self.grid),
            ("adapter_dim", dim % self.adapter_heads == 0),
        ]
        for name, ok in checks:
            if not ok:
                raise LosaError(f"invalid model setting {name}={getattr(self, name)!r}")

    @property
    def dim(self) -> int:
        """Adapter width ``d``."""
        return self.adapter_dim if self.adapter_dim is not None else max(1, self.channels // 4)

    @property
    def branches(self) -> tuple[str, ...]:
        return ADAPTER_CHOICES[self.adapters]

    @property
    def required_layers(self) -> tuple[int, ...]:
        """Layers that ``feats`` must contain for this mode (tapped layers, then the last layer
        unless the base is the stored reference feature)."""
        taps = () if self.mode == "head-only" else self.tapped_layers
        last = [] if self.base_feature == "fc_norm" else [self.last_layer]
        return tuple(dict.fromkeys([*taps, *last]))

    @property
    def required_features(self) -> tuple[str, ...]:
        """Named stored features ``feats`` must contain (as ``[B, T, 1, C]``): ``("fc_norm",)`` when
        the base is the reference feature, else none."""
        return ("fc_norm",) if self.base_feature == "fc_norm" else ()

    @property
    def mean_layers(self) -> tuple[int, ...]:
        """Required layers the model reads only as their mean over cells (the last layer, in every
        mode): ``feats`` may give them as ``[B, T, 1, C]`` cell means, which is exact and spares
        reading, caching and copying the other cells."""
        return (self.last_layer,) if self.last_layer in self.required_layers else ()
