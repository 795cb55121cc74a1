"""Short-range adapter: fine local temporal context from the cell tokens of neighbouring steps."""

from __future__ import annotations


import torch
import torch.nn.functional as F
from torch import Tensor, nn

from losa.adapters.common import MLP, check_tokens, guard_empty_rows


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
        self.mlp = MLP(dim, int(dim * mlp_ratio), dropout)

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
        allowed = guard_empty_rows(allowed)

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
