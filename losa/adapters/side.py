"""AdaTAD† side adapter baseline (OpenTAD's ``Adapter``), on the cached cells of a tapped layer."""

from __future__ import annotations

import math

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from losa.adapters.common import check_tokens


class SideAdapter(nn.Module):
    """The side adapter of AdaTAD† (frozen backbone, one adapter per tapped layer, summed onto the last).

    Structure and initialisation follow OpenTAD's ``Adapter`` (``vit_ladder.py``)::

        h = GELU(down(x))                       # Linear C -> dim, trunc-normal std .02, bias 0
        h = h + pw(dw(h))                       # per spatial location, over tubelet time:
                                                # depthwise Conv1d k=3 (N(0, sqrt(2/3)), bias 0) then
                                                # 1x1 Conv1d (N(0, sqrt(2/dim)), bias 0); no activation
        delta = gamma * up(h)                   # Linear dim -> C, zero init; gamma scalar, init 1

    It runs on the cells the store keeps, ``tokens [B, T, cells, C]`` with ``cells = t_sub·grid²``
    (t-major): every spatial location gets its own time axis of ``T·t_sub`` tubelet slices (a store
    written with ``temporal: keep`` gives tubelet resolution; ``pool`` gives one slice per step).  The
    pooled output (:meth:`delta`) is the mean of the per-cell deltas over the cells of each step —
    computed before ``up``, which is linear, so it equals pooling :meth:`delta_cells`.  Padded steps
    are zeroed after the activation, which is the conv's zero padding at the end of an unpadded
    video; they cannot leak into valid steps.  ``up`` starts at zero, so the adapter starts as identity.
    """

    def __init__(self, channels: int, dim: int | None = None, grid: int = 1, t_sub: int = 1,
                 kernel_size: int = 3) -> None:
        super().__init__()
        dim = dim or max(1, channels // 4)
        if grid < 1 or t_sub < 1 or kernel_size < 1 or kernel_size % 2 == 0:
            raise ValueError(f"side adapter needs grid, t_sub >= 1 and an odd kernel, got "
                             f"grid={grid}, t_sub={t_sub}, kernel_size={kernel_size}")
        self.channels, self.dim, self.grid, self.t_sub = channels, dim, grid, t_sub
        self.down = nn.Linear(channels, dim)
        self.dwconv = nn.Conv1d(dim, dim, kernel_size, padding=kernel_size // 2, groups=dim)
        self.pwconv = nn.Conv1d(dim, dim, 1)
        self.up = nn.Linear(dim, channels)
        self.gamma = nn.Parameter(torch.ones(1))
        self.reset_parameters()

    @property
    def cells(self) -> int:
        return self.t_sub * self.grid * self.grid

    def reset_parameters(self) -> None:
        """OpenTAD's initialisation (see the class docstring)."""
        nn.init.trunc_normal_(self.down.weight, std=0.02, a=-2.0, b=2.0)
        nn.init.zeros_(self.down.bias)
        k = self.dwconv.kernel_size[0]
        nn.init.normal_(self.dwconv.weight, std=math.sqrt(2.0 / k))
        nn.init.zeros_(self.dwconv.bias)
        nn.init.normal_(self.pwconv.weight, std=math.sqrt(2.0 / self.dim))
        nn.init.zeros_(self.pwconv.bias)
        nn.init.zeros_(self.up.weight)
        nn.init.zeros_(self.up.bias)
        nn.init.ones_(self.gamma)

    def _hidden(self, tokens: Tensor, mask: Tensor) -> Tensor:
        """``[B, T, cells, C]`` -> hidden ``[B, T, cells, dim]`` after the temporal conv residual."""
        check_tokens(tokens, mask, self.channels, self.cells)
        b, t = mask.shape
        s, hw = self.t_sub, self.grid * self.grid
        keep = mask[:, :, None, None]
        h = F.gelu(self.down(tokens)).masked_fill(~keep, 0.0)          # [B, T, cells, d]
        seq = h.reshape(b, t * s, hw, self.dim).permute(0, 2, 3, 1)    # [B, hw, d, T*s]
        seq = seq.reshape(b * hw, self.dim, t * s)
        conv = self.pwconv(self.dwconv(seq))
        conv = conv.reshape(b, hw, self.dim, t, s).permute(0, 3, 4, 1, 2)  # [B, T, s, hw, d]
        return (h + conv.reshape(b, t, s * hw, self.dim)).masked_fill(~keep, 0.0)

    def delta_cells(self, tokens: Tensor, mask: Tensor) -> Tensor:
        """Per-cell residual ``[B, T, cells, C]`` (zeros at padded steps) — OpenTAD's output."""
        out = self.up(self._hidden(tokens, mask)) * self.gamma
        return out.masked_fill(~mask[:, :, None, None], 0.0)

    def delta(self, tokens: Tensor, mask: Tensor) -> Tensor:
        """Residual pooled over the cells of each step: ``[B, T, cells, C]`` -> ``[B, T, C]``."""
        out = self.up(self._hidden(tokens, mask).mean(dim=2)) * self.gamma
        return out.masked_fill(~mask[..., None], 0.0)

    def forward(self, tokens: Tensor, mask: Tensor) -> Tensor:
        """Cell mean of ``tokens`` plus :meth:`delta`: ``[B, T, C]``, zeros at padded steps."""
        base = tokens.masked_fill(~mask[:, :, None, None], 0.0).mean(dim=2)
        return (base + self.delta(tokens, mask)).masked_fill(~mask[..., None], 0.0)
