"""Building blocks of the ActionFormer temporal-action-localisation head.

Everything works on channel-first sequences ``x [B, C, T]`` with a boolean ``mask [B, 1, T]``
(True = valid step), as in ActionFormer (Zhang et al., ECCV 2022).  ``mask=None`` means "every step
is valid": the blocks then skip their mask multiplications, which are identities there (the head
passes ``None`` when a whole batch is unpadded, the common case in training).  Outputs are the same.

Masking convention (a deliberate tightening of ActionFormer): every block returns *exact zeros* at
padded steps, including after each LayerNorm.  ActionFormer leaves the LayerNorm bias at padded steps,
which then leaks into the last valid steps through the following kernel-3 convolutions.  Keeping padded
steps at zero makes the outputs of a video independent of how much padding follows it (batched
inference equals batch-size-1 inference) and of whatever values the padded input holds.

Down-sampling (pyramid branch) follows ActionFormer's "MHCA" design: the query, key and value are
down-sampled by a *strided depthwise convolution* (kernel ``stride + 1``) followed by LayerNorm, and
the residual path by a max-pool (kernel ``stride + 1``).  Our max-pool ignores padded steps.  The
mask is down-sampled by taking every ``stride``-th step (ActionFormer's nearest interpolation).
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import Tensor, nn

__all__ = [
    "MaskedConv1D",
    "LayerNorm",
    "Scale",
    "AffineDropPath",
    "drop_path",
    "downsample_mask",
    "apply_mask",
    "masked_max_pool",
    "local_attention",
    "MaskedMHCA",
    "TransformerBlock",
]


def downsample_mask(mask: Tensor | None, stride: int) -> Tensor | None:
    """Down-sample ``mask [B, 1, T]`` by ``stride`` (keeps step ``i * stride``; nearest neighbour)."""
    return mask if stride == 1 or mask is None else mask[..., ::stride]


def apply_mask(x: Tensor, mask: Tensor | None) -> Tensor:
    """Zero ``x [B, C, T]`` at padded steps (``mask [B, 1, T]``); ``mask=None``: ``x`` unchanged."""
    return x if mask is None else x * mask.to(x.dtype)


class MaskedConv1D(nn.Module):
    """1-D convolution ("same" padding, odd kernel) whose output is zeroed at padded steps.

    ``forward(x [B, C_in, T], mask [B, 1, T]) -> (y [B, C_out, T // stride], mask_out)``.
    ``T`` must be divisible by ``stride``.  The bias (if any) is initialised to zero.
    """

    def __init__(
        self,
        in_channels: int,
        out_channels: int,
        kernel_size: int,
        stride: int = 1,
        groups: int = 1,
        bias: bool = True,
    ) -> None:
        super().__init__()
        if kernel_size % 2 != 1:
            raise ValueError(f"MaskedConv1D needs an odd kernel size, got {kernel_size}")
        self.stride = stride
        self.conv = nn.Conv1d(
            in_channels, out_channels, kernel_size, stride=stride, padding=kernel_size // 2,
            groups=groups, bias=bias,
        )
        if bias:
            nn.init.zeros_(self.conv.bias)

    def forward(self, x: Tensor, mask: Tensor | None) -> tuple[Tensor, Tensor | None]:
        if x.shape[-1] % self.stride != 0:
            raise ValueError(f"sequence length {x.shape[-1]} is not divisible by stride {self.stride}")
        out_mask = downsample_mask(mask, self.stride)
        return apply_mask(self.conv(x), out_mask), out_mask


class LayerNorm(nn.Module):
    """LayerNorm over the channel dimension of ``x [B, C, T]`` (affine, eps 1e-5); output in x's dtype.

    Statistics in float32 (also under bf16/fp16 autocast), through ``F.layer_norm`` on the
    channel-last view: one fused kernel forward and backward instead of seven element-wise ops
    (ActionFormer's formula; the same values up to float32 rounding).  The output is made
    contiguous again: the convolutions that follow are faster on it than on the strided view.
    """

    def __init__(self, num_channels: int, eps: float = 1e-5) -> None:
        super().__init__()
        self.num_channels = num_channels
        self.eps = eps
        self.weight = nn.Parameter(torch.ones(1, num_channels, 1))
        self.bias = nn.Parameter(torch.zeros(1, num_channels, 1))

    def forward(self, x: Tensor) -> Tensor:
        with torch.autocast(x.device.type, enabled=False):
            y = F.layer_norm(x.float().transpose(1, 2), (self.num_channels,), self.weight.view(-1),
                             self.bias.view(-1), self.eps)
        return y.transpose(1, 2).contiguous().to(x.dtype)


class Scale(nn.Module):
    """A learnable scalar multiplier (per pyramid level regression scale, init 1.0)."""

    def __init__(self, init_value: float = 1.0) -> None:
        super().__init__()
        self.scale = nn.Parameter(torch.tensor(float(init_value)))

    def forward(self, x: Tensor) -> Tensor:
        return x * self.scale


def drop_path(x: Tensor, drop_prob: float, training: bool) -> Tensor:
    """Stochastic depth: drop whole samples of a residual branch with probability ``drop_prob``."""
    if drop_prob == 0.0 or not training:
        return x
    keep = 1.0 - drop_prob
    shape = (x.shape[0],) + (1,) * (x.dim() - 1)
    mask = torch.empty(shape, dtype=x.dtype, device=x.device).bernoulli_(keep)
    return x * mask / keep


class AffineDropPath(nn.Module):
    """Drop path with a learnable per-channel scale initialised to ``init_scale`` (LayerScale)."""

    def __init__(self, num_channels: int, drop_prob: float = 0.0, init_scale: float = 1e-4) -> None:
        super().__init__()
        self.scale = nn.Parameter(torch.full((1, num_channels, 1), float(init_scale)))
        self.drop_prob = drop_prob

    def forward(self, x: Tensor) -> Tensor:
        return drop_path(self.scale * x, self.drop_prob, self.training)


def masked_max_pool(x: Tensor, mask: Tensor | None, stride: int) -> Tensor:
    """Max-pool ``x [B, C, T]`` with kernel ``stride + 1``, ``stride``, padding ``(stride + 1) // 2``,
    ignoring padded steps; output steps that are padded (per :func:`downsample_mask`) are zero."""
    if stride == 1:
        return apply_mask(x, mask)
    kernel = stride + 1
    if mask is None:  # max_pool1d's own padding is -inf
        return F.max_pool1d(x, kernel, stride=stride, padding=kernel // 2)
    filled = x.masked_fill(~mask, float("-inf"))
    out = F.max_pool1d(filled, kernel, stride=stride, padding=kernel // 2)
    out_mask = downsample_mask(mask, stride)
    return out.masked_fill(~out_mask, 0.0)


def local_attention(
    q: Tensor,
    k: Tensor,
    v: Tensor,
    key_mask: Tensor | None,
    window: int = 0,
    dropout_p: float = 0.0,
    block: int = 128,
) -> Tensor:
    """Masked (optionally local) multi-head attention with ``scaled_dot_product_attention``.

    ``q, k, v [B, H, T, D]``; ``key_mask [B, T]`` bool.  ``window == 0`` attends globally; otherwise
    query ``i`` attends keys ``j`` with ``|i - j| <= window // 2`` (a band), intersected with the key
    mask (``None``: every key valid).  Local attention is computed block-wise (queries in blocks of ``block`` steps against their
    ``block + 2 * (window // 2)`` neighbouring keys), so memory grows linearly with ``T``.
    Query rows without any allowed key return zeros (never NaN).
    """
    bsz, heads, t, d = q.shape
    if window <= 0:
        if key_mask is None:
            return F.scaled_dot_product_attention(q, k, v, dropout_p=dropout_p)
        return _sdpa_guarded(q, k, v, key_mask[:, None, None, :], dropout_p)
    if key_mask is None:
        key_mask = torch.ones(bsz, t, dtype=torch.bool, device=q.device)
    half = window // 2
    qb_len = min(max(block, 2 * half + 1), t)
    n_blocks = -(-t // qb_len)
    tp = n_blocks * qb_len
    span = qb_len + 2 * half
    qp = F.pad(q, (0, 0, 0, tp - t))
    kp = F.pad(k, (0, 0, half, tp - t + half))
    vp = F.pad(v, (0, 0, half, tp - t + half))
    mp = F.pad(key_mask, (half, tp - t + half), value=False)
    # [B, H, nb, D, span] -> [B * nb, H, span, D]
    kb = kp.unfold(2, span, qb_len).permute(0, 2, 1, 4, 3).reshape(bsz * n_blocks, heads, span, d)
    vb = vp.unfold(2, span, qb_len).permute(0, 2, 1, 4, 3).reshape(bsz * n_blocks, heads, span, d)
    qb = qp.view(bsz, heads, n_blocks, qb_len, d).transpose(1, 2).reshape(bsz * n_blocks, heads, qb_len, d)
    mb = mp.unfold(1, span, qb_len).reshape(bsz * n_blocks, 1, 1, span)
    rel = torch.arange(span, device=q.device)[None, :] - torch.arange(qb_len, device=q.device)[:, None]
    band = (rel >= 0) & (rel <= 2 * half)  # key slot j of query i: |(j - half) - i| <= half
    allowed = band[None, None] & mb
    out = _sdpa_guarded(qb, kb, vb, allowed, dropout_p)
    out = out.view(bsz, n_blocks, heads, qb_len, d).transpose(1, 2).reshape(bsz, heads, tp, d)
    return out[:, :, :t]


def _sdpa_guarded(q: Tensor, k: Tensor, v: Tensor, allowed: Tensor, dropout_p: float) -> Tensor:
    """SDPA with a boolean mask; rows with no allowed key are computed unmasked and then zeroed."""
    has_key = allowed.any(dim=-1, keepdim=True)
    out = F.scaled_dot_product_attention(q, k, v, attn_mask=allowed | ~has_key, dropout_p=dropout_p)
    return out.masked_fill(~has_key, 0.0)


class MaskedMHCA(nn.Module):
    """ActionFormer's multi-head *convolutional* self-attention (optionally local, optionally strided).

    q/k/v each go through a depthwise conv (kernel 3, or ``stride + 1`` with stride ``stride``) and
    LayerNorm, then a 1x1 projection; attention uses the key-padding mask (and a band of half-width
    ``window // 2`` when ``window > 0``); the output projection is zeroed at padded steps.
    ``forward(x [B, C, T], mask [B, 1, T]) -> (out [B, C, T // stride], mask_out)``.
    """

    def __init__(
        self,
        dim: int,
        n_heads: int,
        window: int = 0,
        stride: int = 1,
        attn_drop: float = 0.0,
        proj_drop: float = 0.0,
    ) -> None:
        super().__init__()
        if dim % n_heads != 0:
            raise ValueError(f"embedding dim {dim} is not divisible by n_heads {n_heads}")
        if stride != 1 and stride % 2 != 0:
            raise ValueError(f"down-sampling stride must be 1 or even, got {stride}")
        self.n_heads = n_heads
        self.window = window
        self.attn_drop = attn_drop
        kernel = stride + 1 if stride > 1 else 3
        self.query_conv = MaskedConv1D(dim, dim, kernel, stride=stride, groups=dim, bias=False)
        self.key_conv = MaskedConv1D(dim, dim, kernel, stride=stride, groups=dim, bias=False)
        self.value_conv = MaskedConv1D(dim, dim, kernel, stride=stride, groups=dim, bias=False)
        self.query_norm = LayerNorm(dim)
        self.key_norm = LayerNorm(dim)
        self.value_norm = LayerNorm(dim)
        self.query = nn.Conv1d(dim, dim, 1)
        self.key = nn.Conv1d(dim, dim, 1)
        self.value = nn.Conv1d(dim, dim, 1)
        self.proj = nn.Conv1d(dim, dim, 1)
        self.proj_drop = nn.Dropout(proj_drop)

    def _heads(self, x: Tensor) -> Tensor:
        b, c, t = x.shape
        return x.view(b, self.n_heads, c // self.n_heads, t).transpose(2, 3)

    def forward(self, x: Tensor, mask: Tensor | None) -> tuple[Tensor, Tensor | None]:
        q, out_mask = self.query_conv(x, mask)
        k, _ = self.key_conv(x, mask)
        v, _ = self.value_conv(x, mask)
        q = self._heads(self.query(self.query_norm(q)))
        k = self._heads(self.key(self.key_norm(k)))
        v = self._heads(self.value(self.value_norm(v)))
        drop = self.attn_drop if self.training else 0.0
        key_mask = None if out_mask is None else out_mask[:, 0]
        out = local_attention(q, k, v, key_mask, self.window, dropout_p=drop)
        b, h, t, d = out.shape
        out = out.transpose(2, 3).reshape(b, h * d, t)
        return apply_mask(self.proj_drop(self.proj(out)), out_mask), out_mask


class TransformerBlock(nn.Module):
    """Pre-LN transformer block of ActionFormer (MHCA + 4x GELU MLP, affine drop path).

    With ``stride > 1`` the block down-samples (pyramid branch): attention output at ``T // stride``
    and the residual path through :func:`masked_max_pool`.
    ``forward(x [B, C, T], mask [B, 1, T]) -> (out [B, C, T // stride], mask_out)``; padded steps
    of the output are exactly zero.
    """

    def __init__(
        self,
        dim: int,
        n_heads: int,
        window: int = 0,
        stride: int = 1,
        mlp_ratio: int = 4,
        attn_drop: float = 0.0,
        proj_drop: float = 0.0,
        path_drop: float = 0.0,
    ) -> None:
        super().__init__()
        self.stride = stride
        self.ln1 = LayerNorm(dim)
        self.ln2 = LayerNorm(dim)
        self.attn = MaskedMHCA(dim, n_heads, window, stride, attn_drop, proj_drop)
        self.mlp = nn.Sequential(
            nn.Conv1d(dim, mlp_ratio * dim, 1),
            nn.GELU(),
            nn.Dropout(proj_drop),
            nn.Conv1d(mlp_ratio * dim, dim, 1),
            nn.Dropout(proj_drop),
        )
        if path_drop > 0.0:
            self.drop_path_attn: nn.Module = AffineDropPath(dim, path_drop)
            self.drop_path_mlp: nn.Module = AffineDropPath(dim, path_drop)
        else:
            self.drop_path_attn = nn.Identity()
            self.drop_path_mlp = nn.Identity()

    def forward(self, x: Tensor, mask: Tensor | None) -> tuple[Tensor, Tensor | None]:
        out, out_mask = self.attn(apply_mask(self.ln1(x), mask), mask)
        skip = masked_max_pool(x, mask, self.stride)
        out = apply_mask(skip, out_mask) + self.drop_path_attn(out)
        out = out + self.drop_path_mlp(apply_mask(self.mlp(self.ln2(out)), out_mask))
        return out, out_mask
