"""Long-range adapter: masked self-attention over the whole (or banded) step sequence."""

from __future__ import annotations


import torch
import torch.nn.functional as F
from torch import Tensor, nn

from losa.adapters.common import MLP, check_tokens, guard_empty_rows, norm_linear, sinusoidal_positions
from losa.errors import LosaError


class LongRangeAdapter(nn.Module):
    """Masked multi-head self-attention over the whole sequence of per-step tokens.

    ``mean over cells -> LayerNorm -> Linear C->d`` gives one token per step; a pre-norm
    transformer layer (SDPA self-attention with key-padding mask, optional band mask of half-width
    ``local_window``; residual; LN + MLP residual) mixes them.  A fixed sinusoidal temporal position
    encoding (index of the step inside the input window) is added to the query/key inputs only -
    values stay position-free, so the output carries content, while attention can use relative
    offsets.  Returns ``[B, T, d]`` with zeros at padded steps.

    ``context`` (the training window, ``max_seq_len``) bounds what one step can see: a video whose
    valid steps reach past it is cut into windows of ``context`` steps, overlapping by half, each run
    exactly as a training window of that length (positions ``0 .. context-1``, a softmax over at most
    ``context`` keys), and every step keeps the output of the window it is most central in (at least
    ``context // 4`` steps of context on both sides, except at the video's ends).  Shorter inputs, as
    in training, are one window.  ``None``: attend over the whole input.
    """

    def __init__(
        self,
        channels: int,
        dim: int | None = None,
        heads: int = 4,
        mlp_ratio: float = 2.0,
        local_window: int | None = None,
        dropout: float = 0.0,
        context: int | None = None,
    ) -> None:
        super().__init__()
        dim = dim or channels // 4
        if context is not None and context < 1:
            raise ValueError(f"context must be >= 1 or None, got {context}")
        self.context = context
        if dim % heads:
            raise LosaError(f"adapter dim {dim} is not divisible by heads {heads}")
        if local_window is not None and local_window < 0:
            raise LosaError(f"local_window must be >= 0 or None, got {local_window}")
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
        self.mlp = MLP(dim, int(dim * mlp_ratio), dropout)

    def _allowed(self, mask: Tensor) -> Tensor:
        """Boolean attention mask ``[B, 1, T|1, T]`` (True = may attend)."""
        t = mask.shape[1]
        allowed = mask[:, None, None, :]
        if self.local_window is not None:
            idx = torch.arange(t, device=mask.device)
            band = (idx[:, None] - idx[None, :]).abs() <= self.local_window
            allowed = allowed & band[None, None]
        return guard_empty_rows(allowed)

    def forward(self, tokens: Tensor, mask: Tensor) -> Tensor:
        """``tokens [B, T, cells, C]``, ``mask [B, T]`` -> ``[B, T, d]``."""
        check_tokens(tokens, mask, self.channels)
        # the mean over cells, then padded steps zeroed: the same values as zeroing the cells first
        # (a padded step's mean is replaced whatever it was), without a pass over every cell
        x = tokens.mean(dim=2).masked_fill(~mask[..., None], 0.0)
        idx = torch.arange(mask.shape[1], device=mask.device)
        extent = torch.where(mask, idx + 1, 0).amax(dim=1)        # last valid step + 1, per video
        if self.context is None or int(extent.max()) <= self.context:
            return self._mix(x, mask)
        return self._windowed(x, mask, [int(n) for n in extent])

    def window_starts(self, length: int) -> list[int]:
        """Start steps of the windows covering ``length`` steps (one window if it fits)."""
        size = self.context or length
        if length <= size:
            return [0]
        stride = max(1, size // 2)
        return [*range(0, length - size, stride), length - size]

    def _windowed(self, x: Tensor, mask: Tensor, extents: list[int]) -> Tensor:
        """Run every video's windows as one batch of ``context``-step sequences and stitch them."""
        size = int(self.context)
        b, t, c = x.shape
        pad = max(0, size - t)
        xp = F.pad(x, (0, 0, 0, pad))
        mp = F.pad(mask, (0, pad), value=False)
        rows, starts = [], []
        for i, n in enumerate(extents):
            for s in self.window_starts(n):
                rows.append(i)
                starts.append(s)
        rows_t = torch.tensor(rows, device=x.device)
        steps = torch.tensor(starts, device=x.device)[:, None] + torch.arange(size, device=x.device)
        out = self._mix(xp[rows_t[:, None], steps], mp[rows_t[:, None], steps])  # [W, size, d]
        # each step keeps the window it is most central in (ties: the earlier window)
        pos = torch.arange(t, device=x.device)
        result = x.new_zeros(b, t, self.dim)
        first = 0
        for i, n in enumerate(extents):
            k = len(self.window_starts(n))
            s = steps[first:first + k, 0]
            margin = torch.minimum(pos[None] - s[:, None], s[:, None] + size - 1 - pos[None])
            margin = torch.where((pos[None] >= s[:, None]) & (pos[None] < s[:, None] + size), margin, -1)
            best = margin.argmax(dim=0)                               # [T] window per step
            local = (pos - s[best]).clamp(0, size - 1)
            result[i] = out[first + best, local]
            first += k
        return result.masked_fill(~mask[..., None], 0.0)

    def _mix(self, x: Tensor, mask: Tensor) -> Tensor:
        """The transformer layer over per-step tokens ``x [B, T, C]`` -> ``[B, T, d]``."""
        b, t = mask.shape
        h = norm_linear(x, self.in_norm, self.in_proj)  # in_proj(in_norm(x)) [B, T, d], affine folded
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
