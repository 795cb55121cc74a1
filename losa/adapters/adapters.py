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
* :class:`SideAdapter` - the AdaTAD-style side adapter baseline on ``[B, T, C]`` features,
  bottleneck + depthwise temporal conv with a zero-initialised up projection (starts at identity).
"""

from __future__ import annotations

import math

import torch
import torch.nn.functional as F
from torch import Tensor, nn

__all__ = [
    "LongRangeAdapter",
    "ShortRangeAdapter",
    "SideAdapter",
    "check_tokens",
    "sinusoidal_positions",
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


def _guard_empty_rows(allowed: Tensor) -> Tensor:
    """Let rows with no allowed key attend everywhere (their output is discarded) to avoid NaNs."""
    return allowed | ~allowed.any(dim=-1, keepdim=True)


class _MLP(nn.Sequential):
    """Linear - GELU - Dropout - Linear - Dropout."""

    def __init__(self, dim: int, hidden: int, dropout: float) -> None:
        super().__init__(
            nn.Linear(dim, hidden),
            nn.GELU(),
            nn.Dropout(dropout),
            nn.Linear(hidden, dim),
            nn.Dropout(dropout),
        )


class ShortRangeAdapter(nn.Module):
    """Local-window cross-attention from one conv-pooled query per step to neighbouring tokens.

    Per step: ``LayerNorm + Linear C->d`` on every token; a residual ``Conv2d 3x3 (pad 1) + GELU``
    block on each ``grid x grid`` d-channel map (per step and temporal slice), averaged over cells
    (and slices), gives one query.  The query cross-attends (multi-head, SDPA) to all tokens of the
    steps ``t-window .. t+window``; keys of padded or out-of-sequence steps are masked out.  Keys
    carry a learned embedding of their relative temporal position (offset and slice) in the window,
    so the attention can tell near from far.  Output projection + residual on the query, then a
    pre-norm MLP residual.  Returns ``[B, T, d]`` with zeros at padded steps.
    """

    def __init__(
        self,
        channels: int,
        dim: int | None = None,
        heads: int = 4,
        window: int = 2,
        grid: int = 1,
        t_sub: int = 1,
        dropout: float = 0.0,
        mlp_ratio: float = 2.0,
    ) -> None:
        super().__init__()
        dim = dim or channels // 4
        if dim % heads:
            raise ValueError(f"adapter dim {dim} is not divisible by heads {heads}")
        if window < 0 or grid < 1 or t_sub < 1:
            raise ValueError(f"invalid short adapter geometry window={window} grid={grid} t_sub={t_sub}")
        self.channels, self.dim, self.heads = channels, dim, heads
        self.window, self.grid, self.t_sub = window, grid, t_sub
        self.cells = t_sub * grid * grid
        self.dropout = dropout
        self.in_norm = nn.LayerNorm(channels)
        self.in_proj = nn.Linear(channels, dim)
        self.conv = nn.Conv2d(dim, dim, kernel_size=3, padding=1)
        self.q_norm = nn.LayerNorm(dim)
        self.kv_norm = nn.LayerNorm(dim)
        self.q = nn.Linear(dim, dim)
        self.k = nn.Linear(dim, dim)
        self.v = nn.Linear(dim, dim)
        # learned relative position of each key inside the window: (offset, temporal slice)
        self.rel_pos = nn.Parameter(torch.zeros(2 * window + 1, t_sub, dim))
        nn.init.trunc_normal_(self.rel_pos, std=0.02)
        self.out = nn.Linear(dim, dim)
        self.out_drop = nn.Dropout(dropout)
        self.mlp_norm = nn.LayerNorm(dim)
        self.mlp = _MLP(dim, int(dim * mlp_ratio), dropout)

    def _query(self, h: Tensor) -> Tensor:
        """``h [B, T, cells, d]`` -> one query per step ``[B, T, d]`` via the spatial conv block."""
        b, t, _, d = h.shape
        g = self.grid
        maps = h.reshape(b * t * self.t_sub, g, g, d).permute(0, 3, 1, 2)
        maps = maps + F.gelu(self.conv(maps))
        return maps.mean(dim=(2, 3)).reshape(b, t, self.t_sub, d).mean(dim=2)

    def _windows(self, x: Tensor, fill: float | bool) -> Tensor:
        """``x [B, T, ...]`` -> ``[B, T, 2w+1, ...]`` neighbourhoods (steps t-w..t+w), padded with fill."""
        w = self.window
        pad = [0, 0] * (x.dim() - 2) + [w, w]
        xp = F.pad(x, pad, value=fill)
        win = xp.unfold(1, 2 * w + 1, 1)  # [B, T, ..., 2w+1]
        return win.movedim(-1, 2)

    def forward(self, tokens: Tensor, mask: Tensor) -> Tensor:
        """``tokens [B, T, cells, C]``, ``mask [B, T]`` -> ``[B, T, d]``."""
        check_tokens(tokens, mask, self.channels, self.cells)
        b, t, n, _ = tokens.shape
        tokens = tokens.masked_fill(~mask[:, :, None, None], 0.0)
        h = self.in_proj(self.in_norm(tokens))  # [B, T, N, d]
        query = self._query(h)  # [B, T, d]

        kv = self.kv_norm(h)
        k = self._windows(self.k(kv), 0.0)  # [B, T, K=2w+1, N, d]
        v = self._windows(self.v(kv), 0.0)
        # linear key projection of the relative-position embedding (no bias: it is already in k)
        pos = F.linear(self.rel_pos, self.k.weight)  # [2w+1, t_sub, d]
        g2 = self.grid * self.grid
        pos = pos[:, :, None, :].expand(-1, -1, g2, -1).reshape(2 * self.window + 1, n, self.dim)
        k = k + pos
        keys = (2 * self.window + 1) * n
        allowed = self._windows(mask, False)[..., None].expand(-1, -1, -1, n).reshape(b * t, 1, 1, keys)
        allowed = _guard_empty_rows(allowed)

        hd = self.dim // self.heads
        q = self.q(self.q_norm(query)).reshape(b * t, 1, self.heads, hd).transpose(1, 2)
        k = k.reshape(b * t, keys, self.heads, hd).transpose(1, 2)
        v = v.reshape(b * t, keys, self.heads, hd).transpose(1, 2)
        att = F.scaled_dot_product_attention(
            q, k, v, attn_mask=allowed, dropout_p=self.dropout if self.training else 0.0
        )  # [B*T, H, 1, hd]
        att = att.transpose(1, 2).reshape(b, t, self.dim)
        y = query + self.out_drop(self.out(att))
        y = y + self.mlp(self.mlp_norm(y))
        return y.masked_fill(~mask[..., None], 0.0)


class LongRangeAdapter(nn.Module):
    """Masked multi-head self-attention over the whole sequence of per-step tokens.

    ``mean over cells -> LayerNorm -> Linear C->d`` gives one token per step; a pre-norm
    transformer layer (SDPA self-attention with key-padding mask, optional band mask of half-width
    ``local_window``; residual; LN + MLP residual) mixes them.  A fixed sinusoidal temporal position
    encoding (index of the step inside the input window) is added to the query/key inputs only -
    values stay position-free, so the output carries content, while attention can use relative
    offsets.  Returns ``[B, T, d]`` with zeros at padded steps.
    """

    def __init__(
        self,
        channels: int,
        dim: int | None = None,
        heads: int = 4,
        mlp_ratio: float = 2.0,
        local_window: int | None = None,
        dropout: float = 0.0,
    ) -> None:
        super().__init__()
        dim = dim or channels // 4
        if dim % heads:
            raise ValueError(f"adapter dim {dim} is not divisible by heads {heads}")
        if local_window is not None and local_window < 0:
            raise ValueError(f"local_window must be >= 0 or None, got {local_window}")
        self.channels, self.dim, self.heads = channels, dim, heads
        self.local_window = local_window
        self.dropout = dropout
        self.in_norm = nn.LayerNorm(channels)
        self.in_proj = nn.Linear(channels, dim)
        self.attn_norm = nn.LayerNorm(dim)
        self.qk = nn.Linear(dim, 2 * dim)
        self.v = nn.Linear(dim, dim)
        self.out = nn.Linear(dim, dim)
        self.out_drop = nn.Dropout(dropout)
        self.mlp_norm = nn.LayerNorm(dim)
        self.mlp = _MLP(dim, int(dim * mlp_ratio), dropout)

    def _allowed(self, mask: Tensor) -> Tensor:
        """Boolean attention mask ``[B, 1, T|1, T]`` (True = may attend)."""
        t = mask.shape[1]
        allowed = mask[:, None, None, :]
        if self.local_window is not None:
            idx = torch.arange(t, device=mask.device)
            band = (idx[:, None] - idx[None, :]).abs() <= self.local_window
            allowed = allowed & band[None, None]
        return _guard_empty_rows(allowed)

    def forward(self, tokens: Tensor, mask: Tensor) -> Tensor:
        """``tokens [B, T, cells, C]``, ``mask [B, T]`` -> ``[B, T, d]``."""
        check_tokens(tokens, mask, self.channels)
        b, t = mask.shape
        x = tokens.masked_fill(~mask[:, :, None, None], 0.0).mean(dim=2)
        h = self.in_proj(self.in_norm(x))  # [B, T, d]
        a = self.attn_norm(h)
        pe = sinusoidal_positions(t, self.dim, device=a.device, dtype=a.dtype)
        q, k = self.qk(a + pe).chunk(2, dim=-1)
        v = self.v(a)
        hd = self.dim // self.heads
        q, k, v = (z.reshape(b, t, self.heads, hd).transpose(1, 2) for z in (q, k, v))
        att = F.scaled_dot_product_attention(
            q, k, v, attn_mask=self._allowed(mask), dropout_p=self.dropout if self.training else 0.0
        )
        h = h + self.out_drop(self.out(att.transpose(1, 2).reshape(b, t, self.dim)))
        h = h + self.mlp(self.mlp_norm(h))
        return h.masked_fill(~mask[..., None], 0.0)


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
