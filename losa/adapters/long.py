"""Long-range adapter: masked self-attention over the whole (or banded) step sequence."""

from __future__ import annotations


import torch
import torch.nn.functional as F
from torch import Tensor, nn

from losa.adapters.common import MLP, check_tokens, guard_empty_rows, sinusoidal_positions


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
