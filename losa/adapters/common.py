"""LoSA adapters over frozen backbone activations.

All adapters read cached activations of one tapped backbone layer,
``tokens [B, T, cells, C]`` with ``cells = t_sub * grid * grid`` (t-major: every step holds
``t_sub`` temporal slices of a ``grid x grid`` spatial map), together with ``mask [B, T]``
(True = valid step).  Padded steps never influence valid outputs, and every adapter returns
exact zeros at padded steps.

* :class:`ShortRangeAdapter` - one query per step (a small spatial conv block over the cell grid),
  cross-attending to every token of the steps ``t - window .. t + window``: fine local context.
* :class:`LongRangeAdapter` - one token per step (mean over cells), masked self-attention over the
  whole sequence (optionally a band of half-width ``local_window``): long-range context.
* :class:`SideAdapter` - the AdaTAD† side adapter baseline (OpenTAD's ``Adapter``) on the cells of
  every step, bottleneck + depthwise temporal conv residual, zero-initialised up projection × gamma.
"""

from __future__ import annotations

import math

import torch
import torch.nn.functional as F
from torch import Tensor, nn

__all__ = [
    "check_tokens",
    "sinusoidal_positions",
    "guard_empty_rows",
    "norm_linear",
    "MLP",
]


def check_tokens(tokens: Tensor, mask: Tensor, channels: int, cells: int | None = None) -> None:
    """Validate ``tokens [B, T, cells, C]`` against ``mask [B, T]``; ValueError naming the problem."""
    if tokens.dim() != 4:
        raise ValueError(f"tokens must be [B, T, cells, C], got shape {tuple(tokens.shape)}")
    b, t, n, c = tokens.shape
    if c != channels:
        raise ValueError(f"tokens have {c} channels, adapter expects {channels}")
    if cells is not None and n != cells:
        raise ValueError(f"tokens have {n} cells per step, adapter expects {cells} (t_sub*grid*grid)")
    if mask.shape != (b, t) or mask.dtype != torch.bool:
        raise ValueError(f"mask must be bool [B, T] = [{b}, {t}], got {mask.dtype} {tuple(mask.shape)}")


def sinusoidal_positions(length: int, dim: int, *, device=None, dtype=None) -> Tensor:
    """Transformer sin/cos position table ``[length, dim]`` (sin on even, cos on odd channels)."""
    pos = torch.arange(length, device=device, dtype=torch.float32)[:, None]
    half = (dim + 1) // 2
    freq = torch.exp(-math.log(10000.0) * torch.arange(half, device=device, dtype=torch.float32) * 2 / dim)
    ang = pos * freq[None]
    table = torch.stack([ang.sin(), ang.cos()], dim=-1).reshape(length, 2 * half)[:, :dim]
    return table.to(dtype or torch.float32)


def norm_linear(x: Tensor, norm: nn.LayerNorm, *linears: nn.Linear) -> Tensor:
    """``cat([lin(norm(x)) for lin in linears], -1)`` with the norm's affine folded into the
    projections: ``W (g * xhat + b_n) + b = (W g) xhat + (W b_n + b)``, ``xhat`` the plain normalised
    ``x``.  The same function of the same parameters (fp32 rounding aside), but one projection for
    several linears, no affine pass, and when ``x`` needs no gradient (frozen cached features) no
    ``[tokens, C]`` gradient matmul and no LayerNorm backward at all: ``xhat`` is then a constant."""
    xhat = F.layer_norm(x, norm.normalized_shape, None, None, norm.eps)
    weights, biases = [], []
    for lin in linears:
        w, b = lin.weight, lin.bias if lin.bias is not None else lin.weight.new_zeros(lin.out_features)
        if norm.bias is not None:
            b = b + w @ norm.bias
        weights.append(w * norm.weight if norm.weight is not None else w)
        biases.append(b)
    return F.linear(xhat, torch.cat(weights), torch.cat(biases))


def guard_empty_rows(allowed: Tensor) -> Tensor:
    """Let rows with no allowed key attend everywhere (their output is discarded) to avoid NaNs."""
    return allowed | ~allowed.any(dim=-1, keepdim=True)


class MLP(nn.Sequential):
    """Linear - GELU - Dropout - Linear - Dropout."""

    def __init__(self, dim: int, hidden: int, dropout: float) -> None:
        super().__init__(
            nn.Linear(dim, hidden),
            nn.GELU(),
            nn.Dropout(dropout),
            nn.Linear(hidden, dim),
            nn.Dropout(dropout),
        )


