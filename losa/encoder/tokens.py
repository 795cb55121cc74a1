"""Reduce a clip's token grid to the few cells stored per time step."""
from __future__ import annotations

import torch.nn.functional as F
from torch import Tensor
from losa.errors import LosaError

__all__ = ["TEMPORAL_MODES", "pool_tokens", "pooled_cells"]

TEMPORAL_MODES = ("pool", "keep")


def pooled_cells(grid: int, temporal: str, t_tokens: int) -> int:
    """Number of cells :func:`pool_tokens` produces per clip."""
    _check(grid, temporal)
    return grid * grid * (t_tokens if temporal == "keep" else 1)


def _check(grid: int, temporal: str) -> None:
    if temporal not in TEMPORAL_MODES:
        raise LosaError(f"temporal mode {temporal!r} is not one of {', '.join(TEMPORAL_MODES)}")
    if isinstance(grid, bool) or not isinstance(grid, int) or grid < 1:
        raise LosaError(f"pooling grid must be a positive int, got {grid!r}")


def pool_tokens(tokens: Tensor, grid: int, temporal: str) -> Tensor:
    """Pool ``[B, t', h', w', C]`` tokens to ``[B, cells, C]``.

    Spatially: adaptive average pooling to ``grid x grid`` (row-major cells). Temporally:
    ``"pool"`` averages the t' tubelet slots (cells = grid*grid); ``"keep"`` keeps them
    (cells = t'*grid*grid, t-major). Averaging is done in float32 and the result stays float32, so
    a bf16/fp16 forward is rounded only once, when the caller casts to its storage dtype.
    """
    _check(grid, temporal)
    if tokens.ndim != 5:
        raise ValueError(f"expected tokens [B, t', h', w', C], got shape {tuple(tokens.shape)}")
    b, t, h, w, c = tokens.shape
    if grid > min(h, w):
        raise LosaError(f"pooling grid {grid} is larger than the {h}x{w} spatial token grid")
    x = tokens.float()
    if temporal == "pool":
        x = x.mean(dim=1, keepdim=True)
        t = 1
    x = x.reshape(b * t, h, w, c).permute(0, 3, 1, 2)                  # [B*t, C, h, w]
    x = F.adaptive_avg_pool2d(x, (grid, grid))                          # [B*t, C, g, g]
    x = x.permute(0, 2, 3, 1).reshape(b, t * grid * grid, c)
    return x
