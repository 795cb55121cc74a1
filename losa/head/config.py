"""Settings of the ActionFormer head (`HeadConfig`), torch-free so the CLIs can read them fast.

Defaults are the ActionFormer THUMOS-14 recipe.  Each field is a knob (see `losa.schema`).
"""
from __future__ import annotations

from typing import Literal

from losa.errors import LosaError
from losa.schema import knob, settings

__all__ = ["HeadConfig", "THUMOS_RANGES"]

THUMOS_RANGES: tuple[tuple[float, float], ...] = (
    (0, 4), (4, 8), (8, 16), (16, 32), (32, 64), (64, 10000),
)


@settings(what="head", error=LosaError, frozen=True)
class HeadConfig:
    """Hyper-parameters of the ActionFormer head (defaults: the THUMOS-14 recipe).

    ``window`` is the local attention window (half-width ``window // 2``; 0 = global attention).
    ``regression_ranges`` (one ``(lo, hi)`` per level, level-0 grid units) bound the largest
    distance from a point to the boundaries of the action it is asked to regress.
    ``max_seq_len`` is only a default length for callers (e.g. training crops / tracing); the head
    itself accepts any length.
    """

    embd_dim: int = knob(512, "Width of the embedding convolutions (multiple of n_heads).", ge=1)
    embd_kernel: int = knob(3, "Kernel of the embedding convolutions (odd).", ge=1)
    n_embd_layers: int = knob(2, "Embedding convolution layers.", ge=1)
    n_stem: int = knob(2, "Stem transformer blocks at stride 1.", ge=0)
    n_levels: int = knob(6, "Pyramid levels (one regression range each).", ge=1)
    n_heads: int = knob(4, "Attention heads of the transformer blocks.", ge=1)
    window: int = knob(19, "Local attention window in steps (0: global attention).", ge=0)
    scale_factor: int = knob(2, "Down-sampling between pyramid levels (even).", ge=2)
    fpn_dim: int = knob(512, "Width of the FPN neck.", ge=1)
    head_dim: int = knob(512, "Width of the classification / regression heads.", ge=1)
    head_kernel: int = knob(3, "Kernel of the head convolutions (odd).", ge=1)
    n_head_layers: int = knob(3, "Convolution layers per head.", ge=1)
    regression_ranges: tuple[tuple[float, float], ...] = knob(
        THUMOS_RANGES, "Per level (lo, hi) regression range in level-0 steps, e.g. [[0,4],[4,8],...].")
    center_sample: Literal["radius", "none"] = knob("radius", "Positive points: within center_radius strides "
                                                              "of the action centre, or all inside it.")
    center_radius: float = knob(1.5, "Centre-sampling radius in strides.", gt=0)
    prior_prob: float = knob(0.01, "Initial foreground probability of the classifier.", gt=0, lt=1)
    dropout: float = knob(0.0, "Dropout in the transformer blocks.", ge=0, lt=1)
    path_drop: float = knob(0.1, "Stochastic-depth rate of the transformer blocks.", ge=0, lt=1)
    with_ln: bool = knob(True, "LayerNorm after the embedding.")
    max_seq_len: int = knob(2304, "Default sequence length for callers (the head takes any length).", ge=1)
    train_label_smoothing: float = knob(0.0, "Label smoothing of the classification targets.", ge=0, lt=1)

    def __post_init__(self) -> None:
        checks = [
            ("embd_dim", self.embd_dim % self.n_heads == 0),
            ("embd_kernel", self.embd_kernel % 2 == 1),
            ("scale_factor", self.scale_factor % 2 == 0),
            ("head_kernel", self.head_kernel % 2 == 1),
            ("regression_ranges", len(self.regression_ranges) == self.n_levels
             and all(lo <= hi for lo, hi in self.regression_ranges)),
        ]
        for name, ok in checks:
            if not ok:
                raise LosaError(f"invalid head setting {name}={getattr(self, name)!r}")

    @property
    def strides(self) -> tuple[int, ...]:
        """Stride of every pyramid level in level-0 steps: (1, 2, 4, ...)."""
        return tuple(self.scale_factor**lvl for lvl in range(self.n_levels))
