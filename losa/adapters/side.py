"""AdaTAD-style side adapter baseline on per-step features."""

from __future__ import annotations


import torch
import torch.nn.functional as F
from torch import Tensor, nn



class SideAdapter(nn.Module):
    """AdaTAD-style side adapter on per-step features ``[B, T, C]`` (baseline, "AdaTAD-dagger").

    ``down Linear C->d -> GELU -> depthwise Conv1d(k=3, pad 1) over time -> Linear d->d -> GELU
    -> up Linear d->C`` with the up projection zero-initialised, so ``forward`` starts as identity.
    Padded steps are zeroed before the temporal conv, so they cannot leak into valid neighbours.
    """

    def __init__(self, channels: int, dim: int | None = None) -> None:
        super().__init__()
        dim = dim or channels // 4
        self.channels, self.dim = channels, dim
        self.down = nn.Linear(channels, dim)
        self.dwconv = nn.Conv1d(dim, dim, kernel_size=3, padding=1, groups=dim)
        self.pwconv = nn.Linear(dim, dim)
        self.up = nn.Linear(dim, channels)
        nn.init.zeros_(self.up.weight)
        nn.init.zeros_(self.up.bias)

    def delta(self, x: Tensor, mask: Tensor) -> Tensor:
        """The residual branch alone: ``[B, T, C]`` -> ``[B, T, C]`` (zeros at padded steps)."""
        if x.dim() != 3 or x.shape[-1] != self.channels:
            raise ValueError(f"side adapter expects [B, T, {self.channels}], got {tuple(x.shape)}")
        if mask.shape != x.shape[:2] or mask.dtype != torch.bool:
            raise ValueError(f"mask must be bool {tuple(x.shape[:2])}, got {mask.dtype} {tuple(mask.shape)}")
        keep = mask[..., None]
        h = F.gelu(self.down(x.masked_fill(~keep, 0.0))).masked_fill(~keep, 0.0)
        h = self.dwconv(h.transpose(1, 2)).transpose(1, 2)
        h = F.gelu(self.pwconv(h))
        return self.up(h).masked_fill(~keep, 0.0)

    def forward(self, x: Tensor, mask: Tensor) -> Tensor:
        """``x + delta(x)`` at valid steps, zeros at padded steps."""
        return (x + self.delta(x, mask)).masked_fill(~mask[..., None], 0.0)
