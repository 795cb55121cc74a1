"""Short-range adapter: fine local temporal context from the cell tokens of neighbouring steps.

Two designs, chosen by ``mode`` (``LoSAConfig.short_mode``, for ablation):

* ``"spacetime"`` (default): every token gets a factorised position embedding over its tubelet slot,
  grid row and grid column; a depthwise-separable 3-D conv over ``(slot, row, column)`` inside each
  step (kernel 3, zero padding) turns the ``t_sub x grid x grid`` layout into local motion features
  (a kernel that is not mirror-symmetric answers differently to a pattern moving left and to its
  mirror image moving right); the query of a step pools its conv features with learned weights per
  cell and channel (``pool="cells"``, initialised to the mean: a position-aware linear readout, so
  "object appears on the right in late slots" is one weighted sum) or by their plain mean
  (``pool="mean"``, ablation); the keys and values are the conv features of steps ``t-w .. t+w`` plus a
  learned embedding of their step offset.
* ``"pooled"``: the first design, kept for ablation: a 2-D conv over each ``grid x grid`` map, query =
  mean over cells, keys carry an embedding of (offset, slot) only - no row / column position.

Both attend with :func:`banded_attention`, which never materialises ``[B, T, 2w+1, cells, d]`` window
copies: with many cells per step it works by key step (every query that sees a step's tokens, in one
small matmul, then a shift by the offset), with one or two it lets blocks of steps attend, in one
SDPA call each, to the keys around them gathered from one padded key tensor.

Speed (CPU, demo shapes: 32 cells, d = 24, 2 taps): the adapter's work is a few thousand small
tokens, so how an op is laid out decides its cost.  The 3x3 conv of the pooled design on 2x2 maps is
one cell-and-channel mixing matmul (:func:`cell_conv2d`), the norms before projections are folded
into them (:func:`~losa.adapters.common.norm_linear`; no gradient matmul on the frozen input).
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from losa.adapters.common import MLP, check_tokens, norm_linear
from losa.errors import LosaError

__all__ = ["SHORT_MODES", "SHORT_POOLS", "ShortRangeAdapter", "banded_attention", "cell_conv2d", "depthwise_conv3d"]

SHORT_MODES = ("spacetime", "pooled")
#: How the spacetime design pools a step's cell features into its query.
SHORT_POOLS = ("cells", "mean")
#: Tokens per step up to which banded attention runs in blocks (:func:`_blocked_attention`).
BLOCKED_MAX_CELLS = 2


def banded_attention(q: Tensor, k: Tensor, v: Tensor, mask: Tensor, window: int,
                     bias: Tensor | None = None, dropout_p: float = 0.0) -> Tensor:
    """Attention of one query per step to every token of steps ``t-window .. t+window``.

    ``q [T, B, H, hd]``, ``k, v [T, B, H, N, hd]`` (time-major), ``mask [B, T]`` (keys of invalid steps
    and of steps outside the sequence are masked), optional ``bias [T, B, H, 2w+1, S]`` (``S`` divides
    ``N``; slot ``s`` covers cells ``s*N/S .. (s+1)*N/S - 1``) added to the scaled score of each key by
    its step offset.  Returns ``[T, B, H, hd]``; rows without any valid key (padded steps only) attend
    uniformly and their output is meaningless.  Neither way materialises ``[T, 2w+1, N]`` key windows:
    with many tokens per step (``N > BLOCKED_MAX_CELLS``) :func:`_shifted_attention`, with few
    :func:`_blocked_attention` (the same function; they differ by fp32 rounding).
    """
    fn = _blocked_attention if k.shape[3] <= BLOCKED_MAX_CELLS else _shifted_attention
    return fn(q, k, v, mask, window, bias, dropout_p)


def _shifted_attention(q: Tensor, k: Tensor, v: Tensor, mask: Tensor, window: int,
                       bias: Tensor | None = None, dropout_p: float = 0.0) -> Tensor:
    """:func:`banded_attention` by key step: the ``2w+1`` queries that see key step ``u`` (those of
    steps ``u-w .. u+w``) are stacked, ``[2w+1, hd] @ [hd, N]`` per key step gives every score of the
    step's tokens at once, and a shift by the offset turns them into each query's window (likewise
    ``[2w+1, N] @ [N, hd]`` for the values).  Keys and values are used as they are: memory grows
    with the window only in per-query tensors (scores, stacked queries).  Against the blocks of
    :func:`_blocked_attention` (``L + 2w`` steps of keys per ``L`` queries, a bias of that size) it
    does ``(2w+1) / (L+2w)`` of the work: 2-5x faster from 8 tokens per step on, slower below 4.
    """
    t, b, h, n, hd = k.shape
    w = window
    # qs[u, j] = the (scaled) query of step u - (j - w), which sees key step u at offset j - w
    qs = _shifted(F.pad(q * hd ** -0.5, (0, 0, 0, 0, 0, 0, w, w)), w, back=True, stack=True)  # [T,B,H,2w+1,hd]
    scores = _shifted(torch.matmul(qs, k.transpose(-1, -2)), w, back=False)  # [T,B,H,2w+1,N] by query step
    if bias is not None:
        slots = bias.shape[-1]
        scores = (scores.reshape(t, b, h, 2 * w + 1, slots, n // slots) + bias[..., None]).reshape(scores.shape)
    valid = F.pad(mask, (w, w), value=False).unfold(1, 2 * w + 1, 1).transpose(0, 1)  # [T, B, 2w+1]
    allowed = valid | ~valid.any(dim=-1, keepdim=True)  # empty rows: discarded anyway
    scores = scores.masked_fill(~allowed[:, :, None, :, None], float("-inf"))
    attn = torch.softmax(scores.reshape(t, b, h, (2 * w + 1) * n), dim=-1).reshape(scores.shape)
    if dropout_p > 0:
        attn = F.dropout(attn, dropout_p)
    by_key = _shifted(attn, w, back=True)  # [T, B, H, 2w+1, N] by key step
    return _shifted(torch.matmul(by_key, v), w, back=False).sum(dim=3)


def _blocked_attention(q: Tensor, k: Tensor, v: Tensor, mask: Tensor, window: int,
                       bias: Tensor | None = None, dropout_p: float = 0.0, chunk: int = 16) -> Tensor:
    """:func:`banded_attention` for few tokens per step: queries in blocks of ``L = max(chunk, 4 w)``
    steps, each block attending (one SDPA call, with a band mask) to the ``L + 2w`` steps around it,
    gathered from one padded key tensor (at most ``1 + 2w/L <= 1.5`` copies of the keys / values)."""
    t, b, h, n, hd = k.shape
    w = window
    size = max(chunk, 4 * w, 1)
    nc = -(-t // size)
    tp, kw = nc * size, size + 2 * w
    pad = (0, 0, 0, 0, 0, 0, 0, 0, w, tp - t + w)
    kp, vp = F.pad(k, pad), F.pad(v, pad)  # [tp+2w, B, H, N, hd]
    st = kp.stride()
    view = ((nc, kw, b, h, n, hd), (size * st[0], st[0], st[1], st[2], st[3], st[4]))
    kc = kp.as_strided(*view).permute(2, 3, 0, 1, 4, 5).reshape(b, h, nc, kw * n, hd)
    vc = vp.as_strided(*view).permute(2, 3, 0, 1, 4, 5).reshape(b, h, nc, kw * n, hd)
    qc = F.pad(q, (0, 0, 0, 0, 0, 0, 0, tp - t)).reshape(nc, size, b, h, hd).permute(2, 3, 0, 1, 4)
    rows = torch.arange(size, device=k.device)[:, None]
    off = torch.arange(kw, device=k.device)[None] - rows  # key offset + w, in 0..2w inside the band
    band = (off >= 0) & (off <= 2 * w)  # [L, L+2w]
    valid = F.pad(mask, (w, tp - t + w), value=False).unfold(1, kw, size)  # [B, nc, L+2w]
    allowed = band & valid[:, :, None, :]  # [B, nc, L, L+2w]
    allowed = allowed | ~allowed.any(dim=-1, keepdim=True)  # empty rows: discarded anyway
    if bias is None:
        attn = allowed[:, None, :, :, :, None].expand(b, 1, nc, size, kw, n).reshape(b, 1, nc, size, kw * n)
    else:
        slots = bias.shape[-1]
        bc = F.pad(bias, (0, 0, 0, 0, 0, 0, 0, 0, 0, tp - t)).reshape(nc, size, b, h, 2 * w + 1, slots)
        bc = bc.permute(2, 3, 0, 1, 4, 5)[:, :, :, rows, off.clamp(0, 2 * w)]  # [B, H, nc, L, L+2w, S]
        bc = bc.repeat_interleave(n // slots, dim=-1).masked_fill(~allowed[:, None, ..., None], float("-inf"))
        attn = bc.reshape(b, h, nc, size, kw * n)
    out = F.scaled_dot_product_attention(qc, kc, vc, attn_mask=attn, dropout_p=dropout_p)  # [B,H,nc,L,hd]
    return out.permute(2, 3, 0, 1, 4).reshape(tp, b, h, hd)[:t]


def _shifted(x: Tensor, w: int, back: bool, stack: bool = False) -> Tensor:
    """``y[t, :, :, j] = x[t + (j - w), :, :, j]`` for ``x [T, B, H, 2w+1, ...]`` (``back``: ``x[t - (j -
    w)]``), zero outside ``0 .. T-1``; ``stack``: ``x`` is ``[T + 2w, B, H, ...]``, already padded, and
    the same rows are taken for every ``j`` (a new dim 3)."""
    if stack:
        t = x.shape[0] - 2 * w
        return torch.stack([x[2 * w - j if back else j:][:t] for j in range(2 * w + 1)], dim=3)
    t = x.shape[0]
    xp = F.pad(x, [0, 0] * (x.dim() - 1) + [w, w])
    return torch.stack([xp[2 * w - j if back else j:][:t, :, :, j] for j in range(2 * w + 1)], dim=3)


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


def cell_conv2d(x: Tensor, weight: Tensor, bias: Tensor | None, ops: Tensor) -> Tensor:
    """Channels-last 3x3 conv (zero padding 1) of every ``grid x grid`` map: ``x [M, grid*grid, d]``
    (row-major cells) -> same shape; ``weight [d, d, 3, 3]`` / ``bias [d]`` as in ``nn.Conv2d(d, d, 3,
    padding=1)``, ``ops``: the ``[9, N, N]`` shift operators of the grid (:func:`_shift_operators`
    with one slot, its middle 9).  On maps this small the conv is one ``[N·d, N·d]`` cell-and-channel
    mixing matrix: a single matmul, where the CPU ``conv2d`` backward on thousands of 2x2 maps costs
    ~5x the whole adapter's attention.  The same sums as the conv in another order (fp32 rounding)."""
    m, n, d = x.shape
    mix = torch.einsum("kmn,oik->nimo", ops.to(x.dtype), weight.reshape(d, d, 9)).reshape(n * d, n * d)
    y = (x.reshape(m, n * d) @ mix).reshape(m, n, d)
    return y if bias is None else y + bias


class ShortRangeAdapter(nn.Module):
    """Local-window cross-attention from one query per step to the cell tokens of neighbouring steps.

    Per step: ``LayerNorm + Linear C->d`` on every token, then (``mode="spacetime"``) factorised
    slot / row / column position embeddings and a residual depthwise 3-D conv (``3x3x3`` over slot,
    row, column) + GELU + pointwise Linear block, or (``mode="pooled"``) a residual ``Conv2d 3x3`` +
    GELU block on each ``grid x grid`` map.  The step's query pools its cells (spacetime: ``pool``,
    learned per-cell-and-channel weights or the mean; pooled: the mean); it
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
        pool: str = "cells",
    ) -> None:
        super().__init__()
        dim = dim or channels // 4
        if dim % heads:
            raise LosaError(f"adapter dim {dim} is not divisible by heads {heads}")
        if window < 0 or grid < 1 or t_sub < 1:
            raise LosaError(f"invalid short adapter geometry window={window} grid={grid} t_sub={t_sub}")
        if mode not in SHORT_MODES:
            raise LosaError(f"short adapter mode must be one of {', '.join(SHORT_MODES)}, got {mode!r}")
        if pool not in SHORT_POOLS:
            raise LosaError(f"short adapter pool must be one of {', '.join(SHORT_POOLS)}, got {pool!r}")
        self.pool = pool if mode == "spacetime" else "mean"  # the pooled design keeps its mean
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
            if pool == "cells":  # per cell and channel; the mean at initialisation
                self.pool_weight = nn.Parameter(torch.full((self.cells, dim), 1.0 / self.cells))
            rel_slots = 1  # slot, row and column are absolute inside every token
        else:
            self.conv = nn.Conv2d(dim, dim, kernel_size=3, padding=1)
            self.register_buffer("grid_ops", _shift_operators(1, grid, grid)[9:18], persistent=False)
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
        maps = h.reshape(b * t * self.t_sub, self.grid ** 2, d)  # channels-last, row-major cells
        maps = maps + F.gelu(cell_conv2d(maps, self.conv.weight, self.conv.bias, self.grid_ops))
        return maps.mean(dim=1).reshape(b, t, self.t_sub, d).mean(dim=2)

    def forward(self, tokens: Tensor, mask: Tensor) -> Tensor:
        """``tokens [B, T, cells, C]``, ``mask [B, T]`` -> ``[B, T, d]``."""
        check_tokens(tokens, mask, self.channels, self.cells)
        b, t, n, _ = tokens.shape
        heads, hd = self.heads, self.dim // self.heads
        tokens = tokens.masked_fill(~mask[:, :, None, None], 0.0)
        h = norm_linear(tokens, self.in_norm, self.in_proj)  # in_proj(in_norm(tokens)) [B, T, N, d]
        if self.mode == "spacetime":
            h = self._cells(h)
            query = (h * self.pool_weight).sum(dim=2) if self.pool == "cells" else h.mean(dim=2)
        else:
            query = self._pooled_query(h)
        kv = norm_linear(h, self.kv_norm, self.k, self.v).transpose(0, 1)  # time-major [T, B, N, 2d]
        k, v = (z.reshape(t, b, n, heads, hd).transpose(2, 3) for z in kv.split(self.dim, dim=-1))  # [T,B,H,N,hd]
        q = self.q(self.q_norm(query)).transpose(0, 1).reshape(t, b, heads, hd)
        # key projection of the relative-position embedding (no bias: it is already in k), as a
        # score bias q . r[offset(, slot)]
        pos = F.linear(self.rel_pos, self.k.weight).reshape(2 * self.window + 1, -1, heads, hd)
        bias = torch.einsum("tbhd,oshd->tbhos", q, pos) * hd ** -0.5  # [T, B, H, 2w+1, S]
        drop = self.dropout if self.training else 0.0
        att = banded_attention(q, k, v, mask, self.window, bias, drop)  # [T, B, H, hd]
        att = att.reshape(t, b, self.dim).transpose(0, 1)
        y = query + self.out_drop(self.out(att))
        y = y + self.mlp(self.mlp_norm(y))
        return y.masked_fill(~mask[..., None], 0.0)
