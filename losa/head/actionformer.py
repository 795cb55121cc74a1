"""ActionFormer temporal-action-localisation head (Zhang et al., ECCV 2022), THUMOS-14 design.

Pipeline: masked-conv embedding -> stem transformer blocks (local window attention) -> a pyramid of
``n_levels - 1`` down-sampling transformer blocks (strides 1, 2, 4, ..., level-0 grid units) ->
identity FPN neck with LayerNorm -> shared classification and regression conv heads.

Any input length ``T`` is accepted: the head pads internally to a multiple of
``scale_factor ** (n_levels - 1)`` (see :meth:`ActionFormerHead.pad_to_stride`) and returns, for
level ``l`` with stride ``s_l``, the first ``ceil(T / s_l)`` steps — exactly the steps whose level-0
position ``i * s_l`` lies inside the input.  :meth:`ActionFormerHead.points` produces the matching
point table.  Outputs of a video do not depend on the padding that follows it (see ``blocks.py``).
"""

from __future__ import annotations

import math
from collections.abc import Sequence

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from losa.head.blocks import LayerNorm, MaskedConv1D, Scale, TransformerBlock, apply_mask
from losa.head.config import THUMOS_RANGES, HeadConfig  # noqa: F401  (re-exported)

__all__ = ["HeadConfig", "ActionFormerHead", "PredictionHead", "from_actionformer_state_dict", "make_points"]


def make_points(
    lengths: Sequence[int],
    strides: Sequence[int],
    regression_ranges: Sequence[tuple[float, float]],
    device: torch.device | str | None = None,
) -> list[Tensor]:
    """Point tables ``[T_l, 4]`` = (position in level-0 steps, range_lo, range_hi, stride) per level."""
    pts = []
    for n, s, (lo, hi) in zip(lengths, strides, regression_ranges, strict=True):
        t = torch.arange(n, device=device, dtype=torch.float32) * float(s)
        rest = torch.tensor([lo, hi, float(s)], device=device, dtype=torch.float32).expand(n, 3)
        pts.append(torch.cat([t[:, None], rest], dim=1))
    return pts


#: ActionFormer (``LocPointTransformer``) parameter-name pieces -> this head's
_AF_RENAMES = (
    ("backbone.", ""), ("neck.", ""),
    ("cls_head.head.", "cls_head.convs."), ("cls_head.norm.", "cls_head.norms."), ("cls_head.cls_head.", "cls_head.out."),
    ("reg_head.head.", "reg_head.convs."), ("reg_head.norm.", "reg_head.norms."),
    ("reg_head.offset_head.", "reg_head.out."), ("reg_head.scale.", "scales."),
)


def from_actionformer_state_dict(state: dict[str, Tensor]) -> dict[str, Tensor]:
    """An official ActionFormer ``LocPointTransformer`` state dict (``backbone_type:
    convTransformer``, ``fpn_type: identity``; optionally nested under ``state_dict`` /
    ``state_dict_ema`` and prefixed ``module.`` as its checkpoints are) renamed to this head's keys:
    ``ActionFormerHead.load_state_dict(from_actionformer_state_dict(sd))``.  Same shapes, no copies."""
    for nest in ("state_dict_ema", "state_dict", "model"):
        if isinstance(state.get(nest), dict):
            state = state[nest]
            break
    out = {}
    for key, value in state.items():
        name = key[len("module."):] if key.startswith("module.") else key
        for old, new in _AF_RENAMES:
            if name.startswith(old):
                name = new + name[len(old):]
                break
        out[name] = value
    return out


class PredictionHead(nn.Module):
    """Shared conv tower applied to every pyramid level: ``n_layers - 1`` x (masked conv -> LN -> ReLU)
    followed by a masked conv to ``out_dim`` channels.  Returns ``[B, out_dim, T_l]`` per level.

    The levels share the weights, so they run as *one* sequence: concatenated along time with
    ``kernel // 2`` zero steps between them, which the convolutions see exactly as the zero padding
    each level would get on its own, and zeroed again after every layer.  One call per layer
    instead of one per level and layer; the same values up to float32 rounding.
    """

    def __init__(
        self, in_dim: int, feat_dim: int, out_dim: int, n_layers: int, kernel: int, with_ln: bool
    ) -> None:
        super().__init__()
        self.convs = nn.ModuleList()
        self.norms = nn.ModuleList()
        self.gap = kernel // 2
        for i in range(n_layers - 1):
            self.convs.append(MaskedConv1D(in_dim if i == 0 else feat_dim, feat_dim, kernel, bias=not with_ln))
            self.norms.append(LayerNorm(feat_dim) if with_ln else nn.Identity())
        last_in = feat_dim if n_layers > 1 else in_dim
        self.out = MaskedConv1D(last_in, out_dim, kernel)

    def forward(self, feats: Sequence[Tensor], masks: Sequence[Tensor | None]) -> list[Tensor]:
        if len(feats) == 1:
            return self._per_level(feats, masks)
        x, keep = self._concat(feats, masks)
        for conv, norm in zip(self.convs, self.norms):
            x = F.relu(norm(conv.conv(x))) * keep
        y = self.out.conv(x) * keep
        outs, pos = [], 0
        for f in feats:
            n = f.shape[-1]
            outs.append(y[..., pos : pos + n])
            pos += n + self.gap
        return outs

    def _per_level(self, feats: Sequence[Tensor], masks: Sequence[Tensor | None]) -> list[Tensor]:
        outs = []
        for x, m in zip(feats, masks):
            for conv, norm in zip(self.convs, self.norms):
                x, _ = conv(x, m)
                x = apply_mask(F.relu(norm(x)), m)
            outs.append(self.out(x, m)[0])
        return outs

    def _concat(self, feats: Sequence[Tensor], masks: Sequence[Tensor | None]) -> tuple[Tensor, Tensor]:
        """Levels joined along time with ``gap`` zero steps between them, and the float mask of the
        joined sequence (valid steps 1, padded steps and gaps 0)."""
        b, c = feats[0].shape[:2]
        xs, ks = [], []
        for i, (f, m) in enumerate(zip(feats, masks)):
            if i and self.gap:
                xs.append(f.new_zeros(b, c, self.gap))
                ks.append(f.new_zeros(b, 1, self.gap))
            xs.append(f)
            ks.append(f.new_ones(b, 1, f.shape[-1]) if m is None else m.to(f.dtype))
        return torch.cat(xs, dim=-1), torch.cat(ks, dim=-1)


class ActionFormerHead(nn.Module):
    """ActionFormer (conv-transformer backbone + identity FPN + cls/reg heads) on ``[B, C, T]`` features.

    ``forward(x [B, in_dim, T] float, mask [B, 1, T] bool)`` returns
    ``(cls_logits: list of [B, T_l, K], offsets: list of [B, T_l, 2], masks: list of [B, T_l] bool)``
    with ``T_l = ceil(T / stride_l)``.  Offsets are (left, right) distances >= 0 in units of the
    level's stride; logits are pre-sigmoid.
    """

    def __init__(self, in_dim: int, num_classes: int, cfg: HeadConfig | None = None) -> None:
        super().__init__()
        cfg = cfg or HeadConfig()
        if in_dim < 1 or num_classes < 1:
            raise ValueError(f"in_dim and num_classes must be >= 1, got {in_dim} and {num_classes}")
        self.cfg = cfg
        self.in_dim = in_dim
        self.num_classes = num_classes
        d = cfg.embd_dim
        self.embd = nn.ModuleList(
            MaskedConv1D(in_dim if i == 0 else d, d, cfg.embd_kernel, bias=not cfg.with_ln)
            for i in range(cfg.n_embd_layers)
        )
        self.embd_norm = nn.ModuleList(
            LayerNorm(d) if cfg.with_ln else nn.Identity() for _ in range(cfg.n_embd_layers)
        )
        block_kw = {"proj_drop": cfg.dropout, "path_drop": cfg.path_drop}
        self.stem = nn.ModuleList(
            TransformerBlock(d, cfg.n_heads, cfg.window, stride=1, **block_kw) for _ in range(cfg.n_stem)
        )
        self.branch = nn.ModuleList(
            TransformerBlock(d, cfg.n_heads, cfg.window, stride=cfg.scale_factor, **block_kw)
            for _ in range(cfg.n_levels - 1)
        )
        # ActionFormer zeroes every Linear/Conv1d bias of the backbone.
        for mod in [*self.embd, *self.stem, *self.branch]:
            for sub in mod.modules():
                if isinstance(sub, (nn.Conv1d, nn.Linear)) and sub.bias is not None:
                    nn.init.zeros_(sub.bias)
        # Identity FPN neck (a 1x1 projection only when fpn_dim differs from embd_dim).
        self.neck_proj = MaskedConv1D(d, cfg.fpn_dim, 1) if cfg.fpn_dim != d else None
        self.fpn_norms = nn.ModuleList(
            LayerNorm(cfg.fpn_dim) if cfg.with_ln else nn.Identity() for _ in range(cfg.n_levels)
        )
        self.cls_head = PredictionHead(
            cfg.fpn_dim, cfg.head_dim, num_classes, cfg.n_head_layers, cfg.head_kernel, cfg.with_ln
        )
        self.reg_head = PredictionHead(cfg.fpn_dim, cfg.head_dim, 2, cfg.n_head_layers, cfg.head_kernel, cfg.with_ln)
        nn.init.constant_(self.cls_head.out.conv.bias, -math.log((1 - cfg.prior_prob) / cfg.prior_prob))
        self.scales = nn.ModuleList(Scale() for _ in range(cfg.n_levels))

    @property
    def strides(self) -> tuple[int, ...]:
        return self.cfg.strides

    def pad_to_stride(self, t: int) -> int:
        """Smallest length >= ``t`` divisible by the coarsest stride (the internal padded length)."""
        m = self.strides[-1]
        return max(1, -(-int(t) // m)) * m

    def level_lengths(self, t: int) -> list[int]:
        """Output length of every level for a level-0 input length ``t``: ``ceil(t / stride_l)``."""
        return [-(-int(t) // s) for s in self.strides]

    def points(self, t: int | Sequence[int], device: torch.device | str | None = None) -> list[Tensor]:
        """Point tables ``[T_l, 4]`` (t, range_lo, range_hi, stride) for a level-0 length ``t``
        or for explicit per-level lengths (e.g. ``[c.shape[1] for c in cls_logits]``)."""
        lengths = self.level_lengths(t) if isinstance(t, int) else [int(n) for n in t]
        if len(lengths) != self.cfg.n_levels:
            raise ValueError(f"got {len(lengths)} level lengths, the head has {self.cfg.n_levels} levels")
        return make_points(lengths, self.strides, self.cfg.regression_ranges, device)

    def _check_inputs(self, x: Tensor, mask: Tensor) -> Tensor:
        if x.dim() != 3 or x.shape[1] != self.in_dim:
            raise ValueError(f"features must be [B, {self.in_dim}, T], got shape {tuple(x.shape)}")
        if mask.dim() == 2:
            mask = mask[:, None]
        if mask.dtype != torch.bool or mask.shape != (x.shape[0], 1, x.shape[2]):
            raise ValueError(
                f"mask must be bool [B, 1, T] = [{x.shape[0]}, 1, {x.shape[2]}], "
                f"got {mask.dtype} {tuple(mask.shape)}"
            )
        if x.shape[2] == 0:
            raise ValueError("features have zero time steps")
        return mask

    def forward(self, x: Tensor, mask: Tensor) -> tuple[list[Tensor], list[Tensor], list[Tensor]]:
        mask = self._check_inputs(x, mask)
        t = x.shape[-1]
        pad = self.pad_to_stride(t) - t
        if pad:
            x = F.pad(x, (0, pad))
            mask = F.pad(mask, (0, pad), value=False)
        full = mask
        # an unpadded batch runs without masks (they would multiply by 1); outputs are the same
        if bool(mask.all()):
            mask = None
        x = apply_mask(x, mask)
        for conv, norm in zip(self.embd, self.embd_norm):
            x, _ = conv(x, mask)
            x = apply_mask(F.relu(norm(x)), mask)
        for blk in self.stem:
            x, mask = blk(x, mask)
        feats, masks = [x], [mask]
        for blk in self.branch:
            x, mask = blk(x, mask)
            feats.append(x)
            masks.append(mask)
        fpn = []
        for f, m, norm in zip(feats, masks, self.fpn_norms):
            if self.neck_proj is not None:
                f, _ = self.neck_proj(f, m)
            fpn.append(apply_mask(norm(f), m))
        cls = self.cls_head(fpn, masks)
        reg = [F.relu(scale(r)) for scale, r in zip(self.scales, self.reg_head(fpn, masks))]
        lengths = self.level_lengths(t)
        cls_out = [c[:, :, :n].transpose(1, 2) for c, n in zip(cls, lengths)]
        reg_out = [r[:, :, :n].transpose(1, 2) for r, n in zip(reg, lengths)]
        mask_out = [full[:, 0, ::s][:, :n] for s, n in zip(self.strides, lengths)]
        return cls_out, reg_out, mask_out
