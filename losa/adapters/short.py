"""Short-range adapter: fine local temporal context from the cell tokens of neighbouring steps.

Two designs, chosen by ``mode`` (``LoSAConfig.short_mode``, for ablation):

* ``"spacetime"`` (default): every token gets a factorised position embedding over its tubelet slot,
  grid row and grid column; a depthwise-separable 3-D conv over ``(slot, row, column)`` inside each
  step (kernel 3, zero padding) turns the ``t_sub x grid x grid`` layout into local motion features
  (a kernel that is not mirror-symmetric answers differently to a pattern moving left and to its
  mirror image moving right); the query of a step is the mean of its conv features, the keys and
  values are the conv features of steps ``t-w .. t+w`` plus a learned embedding of their step offset.
* ``"pooled"``: the first design, kept for ablation: a 2-D conv over each ``grid x grid`` map, query =
  mean over cells, keys carry an embedding of (offset, slot) only - no row / column position.

Both attend with :func:`banded_attention`, which never materialises ``[B, T, 2w+1, cells, d]`` window
copies: scores are computed offset by offset against views of one padded key tensor (time-major, so a
shifted slice is a view), so memory grows with the window only through the ``(2w+1) cells``
attention weights per query and head, not through copies of d-wide keys and values.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from losa.adapters.common import MLP, check_tokens
from losa.errors import LosaError

__all__ = ["SHORT_MODES", "ShortRangeAdapter", "banded_attention", "depthwise_conv3d"]

SHORT_MODES = ("spacetime", "pooled")


def banded_attention(q: Tensor, k: Tensor, v: Tensor, mask: Tensor, window: int,
                     bias: Tensor | None = None, dropout_p: float = 0.0) -> Tensor:
    """Attention of one query per step to every token of steps ``t-window .. t+window``.

    ``q [T, B, H, hd]``, ``k, v [T, B, H, N, hd]`` (time-major), ``mask [B, T]`` (keys of invalid steps
    and of steps outside the sequence are masked), optional ``bias [T, B, H, 2w+1, N]`` (or
    broadcastable) added to the scaled scores; ``dropout_p`` drops attention weights.  Returns
    ``[T, B, H, hd]``; rows without any valid key (padded steps only) attend uniformly and their
    output is meaningless.
    """
    t, b, h, n, hd = k.shape
    w = window
    kp = F.pad(k, (0, 0, 0, 0, 0, 0, 0, 0, w, w))  # [T+2w, B, H, N, hd]
    vp = F.pad(v, (0, 0, 0, 0, 0, 0, 0, 0, w, w))
    valid = F.pad(mask.t(), (0, 0, w, w), value=False)  # [T+2w, B]
    qs = (q * hd ** -0.5)[:, :, :, None, :]  # [T, B, H, 1, hd]
    # elementwise multiply-sum per offset: on CPU faster than T*B*H single-row matmuls, and what
    # autograd keeps are views of kp / vp (no per-offset copies)
    scores = torch.stack([(qs * kp[o:o + t]).sum(-1) for o in range(2 * w + 1)], dim=3)  # [T,B,H,2w+1,N]
    if bias is not None:
        scores = scores + bias
    allowed = torch.stack([valid[o:o + t] for o in range(2 * w + 1)], dim=-1)  # [T, B, 2w+1]
    allowed = allowed | ~allowed.any(dim=-1, keepdim=True)  # empty rows: discarded anyway
    scores = scores.masked_fill(~allowed[:, :, None, :, None], float("-inf"))
    p = scores.reshape(t, b, h, (2 * w + 1) * n).softmax(dim=-1)
    if dropout_p > 0:
        p = F.dropout(p, dropout_p)
    p = p.reshape(t, b, h, 2 * w + 1, n, 1)
    out = (p[:, :, :, 0] * vp[:t]).sum(-2)
    for o in range(1, 2 * w + 1):
        out = out + (p[:, :, :, o] * vp[o:o + t]).sum(-2)
    return out  # [T, B, H, hd]


def _shift_operators(s: int, r: int, q: int, device=None) -> Tensor:
    """One-hot ``[27, N, N]`` (N = s*r*q, t-major): entry ``[k, m, n]`` = 1 when cell n is cell m moved
    by kernel offset k (a 3x3x3 kernel, zero padding)."""
    idx = torch.arange(s * r * q, device=device).reshape(s, r, q)
    ops = torch.zeros(27, s * r * q, s * r * q, device=device)
    k = 0
    for i in (-1, 0, 1):
        for j in (-1, 0, 1):
            for l in (-1, 0, 1):
                src = F.pad(idx + 1, (1, 1, 1, 1, 1, 1))[1 + i:1 + i + s, 1 + j:1 + j + r, 1 + l:1 + l + q]
                m, n = idx.flatten(), src.flatten() - 1
                ok = n >= 0
                ops[k, m[ok], n[ok]] = 1.0
                k += 1
    return ops


def depthwise_conv3d(x: Tensor, weight: Tensor, bias: Tensor | None = None,
                     ops: Tensor | None = None) -> Tensor:
    """Channels-last depthwise 3-D conv, kernel 3, zero padding 1: ``x [M, S, R, Q, d]`` -> same shape.

    ``weight [d, 1, 3, 3, 3]`` / ``bias [d]`` as in ``nn.Conv3d(d, d, 3, padding=1, groups=d)``; the
    same result as that module on ``x.permute(0, 4, 1, 2, 3)``, computed as one ``[N, N]`` cell-mixing
    matrix per channel (the CPU backward of a grouped ``conv3d`` on maps this small is ~100x slower).
    ``ops`` may hold the cached ``[27, N, N]`` shift operators of this layout.
    """
    m, s, r, q, d = x.shape
    if ops is None:
        ops = _shift_operators(s, r, q, x.device)
    ops = ops.to(x.dtype)  # [27, N, N]
    mix = torch.einsum("dk,kmn->dmn", weight.reshape(d, 27), ops)  # [d, N, N]
    y = torch.einsum("bnd,dmn->bmd", x.reshape(m, s * r * q, d), mix)
    if bias is not None:
        y = y + bias
    return y.reshape(x.shape)


class ShortRangeAdapter(nn.Module):
    """Local-window cross-attention from one query per step to the cell tokens of neighbouring steps.

    Per step: ``LayerNorm + Linear C->d`` on every token, then (``mode="spacetime"``) factorised
    slot / row / column position embeddings and a residual depthwise 3-D conv (``3x3x3`` over slot,
    row, column) + GELU + pointwise Linear block, or (``mode="pooled"``) a residual ``Conv2d 3x3`` +
    GELU block on each ``grid x grid`` map.  The mean over cells is the step's query; it
    cross-attends (multi-head) to all tokens of the steps ``t-window .. t+window``, whose keys carry a
    learned embedding of their step offset (``"pooled"``: of offset and slot).  Keys of padded or
    out-of-sequence steps are masked.  Output projection + residual on the query, then a pre-norm MLP
    residual.  Returns ``[B, T, d]`` with zeros at padded steps.
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
        mode: str = "spacetime",
    ) -> None:
        super().__init__()
        dim = dim or channels // 4
        if dim % heads:
            raise LosaError(f"adapter dim {dim} is not divisible by heads {heads}")
        if window < 0 or grid < 1 or t_sub < 1:
            raise LosaError(f"invalid short adapter geometry window={window} grid={grid} t_sub={t_sub}")
        if mode not in SHORT_MODES:
            raise LosaError(f"short adapter mode must be one of {', '.join(SHORT_MODES)}, got {mode!r}")
        self.channels, self.dim, self.heads = channels, dim, heads
        self.window, self.grid, self.t_sub, self.mode = window, grid, t_sub, mode
        self.cells = t_sub * grid * grid
        self.dropout = dropout
        self.in_norm = nn.LayerNorm(channels)
        self.in_proj = nn.Linear(channels, dim)
        if mode == "spacetime":
            self.pos_slot = nn.Parameter(torch.zeros(t_sub, dim))
            self.pos_row = nn.Parameter(torch.zeros(grid, dim))
            self.pos_col = nn.Parameter(torch.zeros(grid, dim))
            for p in (self.pos_slot, self.pos_row, self.pos_col):
                nn.init.trunc_normal_(p, std=0.02)
            self.dwconv = nn.Conv3d(dim, dim, kernel_size=3, padding=1, groups=dim)
            self.pwconv = nn.Linear(dim, dim)
            self.register_buffer("shift_ops", _shift_operators(t_sub, grid, grid), persistent=False)
            rel_slots = 1  # slot, row and column are absolute inside every token
        else:
            self.conv = nn.Conv2d(dim, dim, kernel_size=3, padding=1)
            rel_slots = t_sub
        self.q_norm = nn.LayerNorm(dim)
        self.kv_norm = nn.LayerNorm(dim)
        self.q = nn.Linear(dim, dim)
        self.k = nn.Linear(dim, dim)
        self.v = nn.Linear(dim, dim)
        # learned relative position of each key inside the window: (offset[, temporal slice])
        self.rel_pos = nn.Parameter(torch.zeros(2 * window + 1, rel_slots, dim))
        nn.init.trunc_normal_(self.rel_pos, std=0.02)
        self.out = nn.Linear(dim, dim)
        self.out_drop = nn.Dropout(dropout)
        self.mlp_norm = nn.LayerNorm(dim)
        self.mlp = MLP(dim, int(dim * mlp_ratio), dropout)

    def cell_positions(self) -> Tensor:
        """Factorised position embedding of every cell ``[cells, d]`` (t-major: slot, row, column)."""
        pos = self.pos_slot[:, None, None] + self.pos_row[None, :, None] + self.pos_col[None, None, :]
        return pos.reshape(self.cells, self.dim)

    def _cells(self, h: Tensor) -> Tensor:
        """``h [B, T, cells, d]`` -> motion-aware cell features (same shape), spacetime mode."""
        b, t, n, d = h.shape
        g, s = self.grid, self.t_sub
        h = h + self.cell_positions()
        maps = h.reshape(b * t, s, g, g, d)  # channels-last [BT, slot, row, col, d]
        y = depthwise_conv3d(maps, self.dwconv.weight, self.dwconv.bias, self.shift_ops).reshape(b, t, n, d)
        return h + self.pwconv(F.gelu(y))

    def _pooled_query(self, h: Tensor) -> Tensor:
        """``h [B, T, cells, d]`` -> one query per step ``[B, T, d]`` via the spatial conv block."""
        b, t, _, d = h.shape
        g = self.grid
        maps = h.reshape(b * t * self.t_sub, g, g, d).permute(0, 3, 1, 2)
        maps = maps + F.gelu(self.conv(maps))
        return maps.mean(dim=(2, 3)).reshape(b, t, self.t_sub, d).mean(dim=2)

    def forward(self, tokens: Tensor, mask: Tensor) -> Tensor:
        """``tokens [B, T, cells, C]``, ``mask [B, T]`` -> ``[B, T, d]``."""
        check_tokens(tokens, mask, self.channels, self.cells)
        b, t, n, _ = tokens.shape
        heads, hd = self.heads, self.dim // self.heads
        tokens = tokens.masked_fill(~mask[:, :, None, None], 0.0)
        h = self.in_proj(self.in_norm(tokens))  # [B, T, N, d]
        if self.mode == "spacetime":
            h = self._cells(h)
            query = h.mean(dim=2)
        else:
            query = self._pooled_query(h)
        kv = self.kv_norm(h).transpose(0, 1)  # time-major [T, B, N, d]
        k = self.k(kv).reshape(t, b, n, heads, hd).transpose(2, 3)  # [T, B, H, N, hd]
        v = self.v(kv).reshape(t, b, n, heads, hd).transpose(2, 3)
        q = self.q(self.q_norm(query)).transpose(0, 1).reshape(t, b, heads, hd)
        # key projection of the relative-position embedding (no bias: it is already in k), as a
        # score bias q . r[offset(, slot)]
        pos = F.linear(self.rel_pos, self.k.weight).reshape(2 * self.window + 1, -1, heads, hd)
        bias = torch.einsum("tbhd,oshd->tbhos", q, pos) * hd ** -0.5  # [T, B, H, 2w+1, S]
        if bias.shape[-1] > 1:  # per slot: every slot covers grid*grid cells (t-major)
            bias = bias.repeat_interleave(self.grid * self.grid, dim=-1)
        drop = self.dropout if self.training else 0.0
        att = banded_attention(q, k, v, mask, self.window, bias, drop)  # [T, B, H, hd]
        att = att.reshape(t, b, self.dim).transpose(0, 1)
        y = query + self.out_drop(self.out(att))
        y = y + self.mlp(self.mlp_norm(y))
        return y.masked_fill(~mask[..., None], 0.0)
