"""Frozen VideoMAEv2 video ViT encoder built from timm blocks.

The architecture follows the official VideoMAEv2 encoder: a Conv3d tubelet patch embedding, a fixed
1-D sine-cosine position table over the flattened token grid (no CLS token), and pre-norm
transformer blocks (LayerNorm eps 1e-6, qkv bias, exact GELU MLP). Blocks are timm
``vision_transformer.Block`` modules with fused scaled-dot-product attention.

``forward_layers`` returns the outputs of selected blocks (1-based) as ``[B, t', h', w', C]`` token
grids and stops after the deepest requested block, so tapping layer 20 of a 40-block model costs
half a forward pass. ``pool_feature`` / ``forward_features`` give VideoMAEv2's clip feature
``fc_norm(mean of all last-block tokens)`` (the feature of its released TAD features).

Position table at a geometry other than the pre-training one (``pos_table``, see
:data:`POS_TABLES`): ``"official"`` builds a fresh 1-D sin-cos table for the actual token count, as
VideoMAEv2 does when the model is built with another ``img_size``/``all_frames``; ``"trilinear"``
resizes the pre-training (16 frames, 224 px) table over (t', h', w'); ``"bicubic"`` builds the table
for the actual number of tubelet slots at the pre-training size and resizes it per slot with bicubic
interpolation over (h', w') (OpenTAD's AdaTAD backbones). All three agree at the native geometry.
"""
from __future__ import annotations

import math
import operator
from collections.abc import Sequence
from dataclasses import asdict, dataclass
from functools import partial
from typing import Any

import torch
import torch.nn.functional as F
from timm.layers import Mlp
from timm.models.vision_transformer import Block
from torch import Tensor, nn
from losa.errors import LosaError

__all__ = [
    "POS_TABLES",
    "PRESETS",
    "BackboneConfig",
    "VideoViT",
    "build_backbone",
    "flops_per_clip",
    "get_preset",
    "get_sinusoid_encoding_table",
]


@dataclass(frozen=True)
class BackboneConfig:
    """Shape of a VideoMAEv2 encoder; ``num_frames``/``img_size`` are its pre-training geometry."""

    name: str
    patch_size: int
    embed_dim: int
    depth: int
    num_heads: int
    mlp_hidden: int
    tubelet_size: int = 2
    num_frames: int = 16
    img_size: int = 224

    def __post_init__(self) -> None:
        for field in ("patch_size", "embed_dim", "depth", "num_heads", "mlp_hidden",
                      "tubelet_size", "num_frames", "img_size"):
            value = getattr(self, field)
            if not isinstance(value, int) or isinstance(value, bool) or value <= 0:
                raise LosaError(f"backbone {self.name!r}: {field} must be a positive int, got {value!r}")
        if self.embed_dim % self.num_heads:
            raise LosaError(f"backbone {self.name!r}: embed_dim {self.embed_dim} is not divisible "
                             f"by num_heads {self.num_heads}")

    def to_dict(self) -> dict[str, Any]:
        """Plain JSON-serialisable dict of all fields."""
        return asdict(self)

    def grid(self, num_frames: int, img_size: int) -> tuple[int, int, int]:
        """Token grid (t', h', w') for clips of ``num_frames`` frames at ``img_size`` pixels.

        Raises ValueError when the geometry does not tile exactly into tubelets/patches.
        """
        if not isinstance(num_frames, int) or num_frames <= 0 or num_frames % self.tubelet_size:
            raise LosaError(f"num_frames {num_frames} is not a positive multiple of the tubelet "
                             f"size {self.tubelet_size} for {self.name}")
        if not isinstance(img_size, int) or img_size <= 0 or img_size % self.patch_size:
            raise LosaError(f"resolution {img_size} is not a positive multiple of the patch size "
                             f"{self.patch_size} for {self.name}")
        side = img_size // self.patch_size
        return num_frames // self.tubelet_size, side, side


PRESETS: dict[str, BackboneConfig] = {
    cfg.name: cfg
    for cfg in (
        BackboneConfig("tiny", patch_size=16, embed_dim=96, depth=4, num_heads=3, mlp_hidden=384),
        BackboneConfig("vit-s", patch_size=16, embed_dim=384, depth=12, num_heads=6, mlp_hidden=1536),
        BackboneConfig("vit-b", patch_size=16, embed_dim=768, depth=12, num_heads=12, mlp_hidden=3072),
        BackboneConfig("vit-l", patch_size=16, embed_dim=1024, depth=24, num_heads=16, mlp_hidden=4096),
        BackboneConfig("vit-h", patch_size=16, embed_dim=1280, depth=32, num_heads=16, mlp_hidden=5120),
        BackboneConfig("vit-g", patch_size=14, embed_dim=1408, depth=40, num_heads=16, mlp_hidden=6144),
    )
}


def get_preset(name: str) -> BackboneConfig:
    """Look up a preset by name (case-insensitive, ``_`` accepted for ``-``)."""
    key = str(name).strip().lower().replace("_", "-")
    if key not in PRESETS:
        raise LosaError(f"unknown backbone preset {name!r}; valid presets: {', '.join(PRESETS)}")
    return PRESETS[key]


def get_sinusoid_encoding_table(n_position: int, d_hid: int) -> Tensor:
    """VideoMAEv2 1-D sin-cos table ``[n_position, d_hid]`` (float64).

    angle(pos, i) = pos / 10000^(2*(i//2)/d_hid); sine on even dims, cosine on odd dims.
    """
    pos = torch.arange(n_position, dtype=torch.float64)[:, None]
    dims = torch.arange(d_hid, dtype=torch.float64)
    exponent = 2.0 * torch.div(dims, 2, rounding_mode="floor") / d_hid
    angles = pos / torch.pow(torch.tensor(10000.0, dtype=torch.float64), exponent)
    table = torch.empty_like(angles)
    table[:, 0::2] = torch.sin(angles[:, 0::2])
    table[:, 1::2] = torch.cos(angles[:, 1::2])
    return table


#: How the position table is made for a token grid other than the pre-training one (module doc).
POS_TABLES = ("official", "trilinear", "bicubic")


def _position_table(cfg: BackboneConfig, grid: tuple[int, int, int], mode: str = "official") -> Tensor:
    """Position table ``[1, t'*h'*w', C]`` float32 for ``grid`` (``mode``: one of POS_TABLES)."""
    if mode not in POS_TABLES:
        raise LosaError(f"position table {mode!r} is not one of {', '.join(POS_TABLES)}")
    base = cfg.grid(cfg.num_frames, cfg.img_size)
    dim = cfg.embed_dim
    if mode == "official" or grid == base:
        table = get_sinusoid_encoding_table(math.prod(grid), dim).to(torch.float32)
    elif mode == "trilinear":
        table = get_sinusoid_encoding_table(math.prod(base), dim)
        vol = table.reshape(1, *base, dim).permute(0, 4, 1, 2, 3)                  # [1, C, t, h, w]
        vol = F.interpolate(vol, size=grid, mode="trilinear", align_corners=False)
        table = vol.permute(0, 2, 3, 4, 1).reshape(-1, dim)
    else:  # bicubic: fresh table for the actual t' at the pre-training size, resized per slot
        t, h, w = grid
        table = get_sinusoid_encoding_table(t * base[1] * base[2], dim).to(torch.float32)
        per_slot = table.reshape(t, base[1], base[2], dim).permute(0, 3, 1, 2)     # [t, C, h0, w0]
        per_slot = F.interpolate(per_slot, size=(h, w), mode="bicubic", align_corners=False)
        table = per_slot.permute(0, 2, 3, 1).reshape(-1, dim)
    return table.to(torch.float32).unsqueeze(0)


def _mlp_with_hidden(hidden: int) -> Any:
    """Mlp factory that forces the hidden width (timm's int(dim * mlp_ratio) can round down)."""
    def make(**kwargs: Any) -> nn.Module:
        kwargs["hidden_features"] = hidden
        return Mlp(**kwargs)
    return make


class VideoViT(nn.Module):
    """VideoMAEv2 encoder (no CLS token, fixed sin-cos positions), frozen feature tapper.

    Input ``x``: ``[B, 3, T, H, W]`` float, already normalised, ``T == num_frames`` and
    ``H == W == img_size``. ``fc_norm`` is the checkpoint's final LayerNorm (eps 1e-6) applied to the
    mean of the last block's tokens (:meth:`pool_feature`); the block outputs never pass through it.
    """

    def __init__(self, cfg: BackboneConfig, num_frames: int = 16, img_size: int = 224,
                 pos_table: str = "official") -> None:
        super().__init__()
        self.cfg = cfg
        self.num_frames = num_frames
        self.img_size = img_size
        self.pos_table = pos_table
        self.grid: tuple[int, int, int] = cfg.grid(num_frames, img_size)
        p, tub, dim = cfg.patch_size, cfg.tubelet_size, cfg.embed_dim
        self.patch_embed = nn.Module()
        self.patch_embed.proj = nn.Conv3d(3, dim, kernel_size=(tub, p, p), stride=(tub, p, p))
        self.register_buffer("pos_embed", _position_table(cfg, self.grid, pos_table), persistent=False)
        norm_layer = partial(nn.LayerNorm, eps=1e-6)
        self.blocks = nn.ModuleList(
            Block(dim, cfg.num_heads, mlp_ratio=cfg.mlp_hidden / dim, qkv_bias=True,
                  norm_layer=norm_layer, act_layer=nn.GELU, mlp_layer=_mlp_with_hidden(cfg.mlp_hidden))
            for _ in range(cfg.depth)
        )
        self.fc_norm = norm_layer(dim)
        for blk in self.blocks:
            blk.attn.fused_attn = True          # always F.scaled_dot_product_attention
        self.init_weights()

    @property
    def embed_dim(self) -> int:
        return self.cfg.embed_dim

    @property
    def depth(self) -> int:
        return self.cfg.depth

    def init_weights(self) -> None:
        """timm ViT init: trunc-normal(std .02) Linear weights, zero biases, LayerNorm (1, 0).

        The Conv3d patch embedding keeps PyTorch's default init, as in VideoMAEv2.
        """
        for module in self.modules():
            if isinstance(module, nn.Linear):
                nn.init.trunc_normal_(module.weight, std=0.02)
                if module.bias is not None:
                    nn.init.zeros_(module.bias)
            elif isinstance(module, nn.LayerNorm):
                nn.init.ones_(module.weight)
                nn.init.zeros_(module.bias)

    def _check_layers(self, layers: Sequence[int]) -> list[int]:
        if isinstance(layers, (int, str)) or len(layers) == 0:
            raise LosaError(f"layers must be a non-empty list of block indices 1..{self.depth}, "
                             f"got {layers!r}")
        out: set[int] = set()
        for layer in layers:
            try:
                index = operator.index(layer) if not isinstance(layer, bool) else None
            except TypeError:
                index = None
            if index is None or not 1 <= index <= self.depth:
                raise LosaError(f"layer {layer!r} out of range 1..{self.depth} for {self.cfg.name}")
            out.add(index)
        return sorted(out)

    def embed(self, x: Tensor) -> Tensor:
        """Patchify + add positions: ``[B, 3, T, H, W]`` → tokens ``[B, N, C]``."""
        if x.ndim != 5 or x.shape[1] != 3:
            raise ValueError(f"expected input [B, 3, T, H, W], got shape {tuple(x.shape)}")
        _, _, t, h, w = x.shape
        if (t, h, w) != (self.num_frames, self.img_size, self.img_size):
            raise ValueError(f"input clip {t}x{h}x{w} (frames x height x width) does not match the "
                             f"backbone geometry {self.num_frames}x{self.img_size}x{self.img_size}")
        tokens = self.patch_embed.proj(x).flatten(2).transpose(1, 2)
        return tokens + self.pos_embed.to(dtype=tokens.dtype)

    @torch.no_grad()
    def fold_input_affine(self, scale: Sequence[float], shift: Sequence[float]) -> None:
        """Fold a per-channel input transform ``x' = scale * x + shift`` into the patch embedding, so
        that the model then takes ``x`` (e.g. raw 0..255 pixel values) and gives what it gave for
        ``x'``.  Exact in real arithmetic (computed in float64, stored in the weights' dtype): the
        Conv3d has stride = kernel and no padding, so every input value enters only through it."""
        proj = self.patch_embed.proj
        if any(int(p) != 0 for p in proj.padding):
            raise LosaError("cannot fold an input transform into a padded patch embedding")
        w = proj.weight.double()  # [C, 3, kt, kh, kw]
        s = torch.tensor(scale, dtype=torch.float64, device=w.device).view(1, 3, 1, 1, 1)
        b = torch.tensor(shift, dtype=torch.float64, device=w.device).view(1, 3, 1, 1, 1)
        proj.bias.copy_((proj.bias.double() + (w * b).sum(dim=(1, 2, 3, 4))).to(proj.bias.dtype))
        proj.weight.copy_((w * s).to(proj.weight.dtype))

    def forward_layers(self, x: Tensor, layers: Sequence[int]) -> dict[int, Tensor]:
        """Outputs of the requested blocks (1-based) as ``{layer: [B, t', h', w', C]}``.

        Blocks after ``max(layers)`` are never run.
        """
        wanted = self._check_layers(layers)
        tokens = self.embed(x)
        batch = tokens.shape[0]
        out: dict[int, Tensor] = {}
        for index, blk in enumerate(self.blocks[: wanted[-1]], start=1):
            tokens = blk(tokens)
            if index in wanted:
                out[index] = tokens.reshape(batch, *self.grid, self.embed_dim)
        return out

    def forward(self, x: Tensor) -> Tensor:
        """Last block output ``[B, t', h', w', C]`` (no final norm)."""
        return self.forward_layers(x, [self.depth])[self.depth]

    def pool_feature(self, last_tokens: Tensor) -> Tensor:
        """``fc_norm(mean over all tokens)`` of last-block tokens ``[B, t', h', w', C]`` → ``[B, C]``.

        The mean and the norm run in float32 whatever the tokens' dtype (also under autocast).
        """
        if last_tokens.ndim != 5 or last_tokens.shape[-1] != self.embed_dim:
            raise ValueError(f"expected last-block tokens [B, t', h', w', {self.embed_dim}], "
                             f"got shape {tuple(last_tokens.shape)}")
        mean = last_tokens.float().flatten(1, 3).mean(dim=1)
        norm = self.fc_norm
        return F.layer_norm(mean, norm.normalized_shape, norm.weight.float(), norm.bias.float(), norm.eps)

    def forward_features(self, x: Tensor) -> Tensor:
        """VideoMAEv2's clip feature ``fc_norm(mean of all last-block tokens)`` ``[B, C]``."""
        return self.pool_feature(self.forward(x))


def build_backbone(preset: str, num_frames: int = 16, img_size: int = 224, seed: int = 0,
                   pos_table: str = "official") -> VideoViT:
    """Build a frozen (eval, no grad) encoder with a deterministic random init from ``seed``.

    The global torch RNG state is left untouched. ``fc_norm`` starts as the official init (weight 1,
    bias 0) until a checkpoint is loaded.
    """
    cfg = get_preset(preset)
    cfg.grid(num_frames, img_size)   # validate before spending time on construction
    if pos_table not in POS_TABLES:
        raise LosaError(f"position table {pos_table!r} is not one of {', '.join(POS_TABLES)}")
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(seed)
        model = VideoViT(cfg, num_frames=num_frames, img_size=img_size, pos_table=pos_table)
    model.eval()
    model.requires_grad_(False)
    return model


def flops_per_clip(cfg: BackboneConfig, num_frames: int, img_size: int) -> float:
    """Forward FLOPs (2 x multiply-accumulates) of one clip through patch embed + all blocks.

    Counts the matrix products only: patch-embed conv, qkv, q@k^T, attn@v, output projection and
    the two MLP layers. Norms, softmax, GELU and residual adds are ignored (< 1 %).
    """
    t, h, w = cfg.grid(num_frames, img_size)
    n, d, m = t * h * w, cfg.embed_dim, cfg.mlp_hidden
    patch_macs = n * d * 3 * cfg.tubelet_size * cfg.patch_size ** 2
    block_macs = n * d * 3 * d + 2 * n * n * d + n * d * d + 2 * n * d * m
    return 2.0 * (patch_macs + cfg.depth * block_macs)
