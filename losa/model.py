"""The full temporal-action-localisation model trained from cached activations.

``TALModel(cfg)`` maps ``feats: dict[layer, Tensor [B, T, cells, C]]`` and ``mask [B, T]`` (True =
valid step) to ActionFormer head outputs.  Three modes:

* ``"losa"``: Long- and/or Short-range adapters on every tapped layer, merged into the last-layer
  features (mean over cells) by :class:`~losa.adapters.fusion.LongShortGatedFusion`.  With the default
  zero-initialised gates the model starts exactly as the head-only model.
* ``"side"``: AdaTAD† side adapters (OpenTAD's ``Adapter``, one per tapped layer, run on the stored
  cells and pooled afterwards) whose residual outputs are summed onto the last-layer features
  (baseline, starts at identity).
* ``"head-only"``: the ActionFormer head on the last layer alone (tapped layers are ignored).

The base (what head-only reads, and what the adapters are fused into) is the last layer's cell mean
by default, or with ``base_feature="fc_norm"`` the stored reference feature ``feats["fc_norm"]
[B, T, 1, C]`` — VideoMAEv2's ``fc_norm(mean token)``, the feature of ActionFormer's 69.6 on THUMOS-14
(docs/reference-recipes.md).  Zero-initialised gates then start LoSA exactly as that head-only model.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Any, NamedTuple

import torch
from torch import Tensor, nn

from losa.config import ADAPTER_CHOICES, MODES, LoSAConfig  # noqa: F401  (defined there, torch-free)
from losa.head.actionformer import ActionFormerHead
from losa.adapters import LongRangeAdapter, ShortRangeAdapter, SideAdapter
from losa.adapters.fusion import LongShortGatedFusion
from losa.head.losses import TALLoss
from losa.post.postprocess import postprocess

__all__ = ["ADAPTER_CHOICES", "MODES", "LoSAConfig", "TALModel", "TALOutput"]


class TALOutput(NamedTuple):
    """Head outputs per pyramid level plus their point tables (``postprocess(*out)`` works)."""

    cls_logits: list[Tensor]  # [B, T_l, K] pre-sigmoid
    offsets: list[Tensor]  # [B, T_l, 2] (left, right) in units of the level stride
    masks: list[Tensor]  # [B, T_l] bool
    points: list[Tensor]  # [T_l, 4] (t, range_lo, range_hi, stride)


def _centre_over_steps(x: Tensor, mask: Tensor) -> Tensor:
    """``x [B, T, cells, C]`` minus its mean over the valid steps of each sequence (padding → 0)."""
    valid = mask[:, :, None, None].to(x.dtype)
    mean = (x * valid).sum(dim=1, keepdim=True) / valid.sum(dim=1, keepdim=True).clamp_min(1.0)
    return (x - mean) * valid


def _layer_key(layer: int) -> str:
    return f"layer_{layer:02d}"


class TALModel(nn.Module):
    """Adapters + fusion + ActionFormer head over cached frozen-backbone activations."""

    def __init__(self, cfg: LoSAConfig) -> None:
        super().__init__()
        self.cfg = cfg
        c, d = cfg.channels, cfg.dim
        if cfg.mode == "losa":
            keys = [_layer_key(v) for v in cfg.tapped_layers]
            if "long" in cfg.branches:
                self.long_adapters = nn.ModuleDict({
                    k: LongRangeAdapter(
                        c, d, cfg.adapter_heads, cfg.long_mlp_ratio, cfg.long_window, cfg.dropout,
                        context=cfg.long_context,
                    )
                    for k in keys
                })
            if "short" in cfg.branches:
                self.short_adapters = nn.ModuleDict({
                    k: ShortRangeAdapter(
                        c, d, cfg.adapter_heads, cfg.short_window, cfg.grid, cfg.t_sub, cfg.dropout,
                        mode=cfg.short_mode, pool=cfg.short_pool,
                    )
                    for k in keys
                })
            self.fusion = LongShortGatedFusion(c, d, len(keys), cfg.branches, cfg.fusion)
        elif cfg.mode == "side":
            self.side_adapters = nn.ModuleDict({
                _layer_key(v): SideAdapter(c, d, cfg.grid, cfg.t_sub) for v in cfg.tapped_layers
            })
        self.head = ActionFormerHead(c, cfg.num_classes, cfg.head)
        self.criterion = TALLoss(
            cfg.num_classes,
            center_sample=cfg.head.center_sample,
            center_radius=cfg.head.center_radius,
            label_smoothing=cfg.head.train_label_smoothing,
        )

    # ------------------------------------------------------------------ forward
    def _check_inputs(self, feats: Mapping[int, Tensor], mask: Tensor) -> None:
        cfg = self.cfg
        if mask.dim() != 2 or mask.dtype != torch.bool:
            raise ValueError(f"mask must be bool [B, T], got {mask.dtype} {tuple(mask.shape)}")
        want = (*mask.shape, cfg.cells, cfg.channels)
        mean_ok = (*mask.shape, 1, cfg.channels)  # cell mean of a layer used only as such
        for layer in cfg.required_layers:
            if layer not in feats:
                have = ", ".join(str(k) for k in sorted(feats)) or "none"
                raise ValueError(f"features lack layer {layer} (model needs it; batch has {have})")
            shape = tuple(feats[layer].shape)
            if shape != want and not (layer in cfg.mean_layers and shape == mean_ok):
                raise ValueError(
                    f"features of layer {layer} have shape {tuple(feats[layer].shape)}, expected {want} "
                    "[B, T, cells, C]"
                )
        for name in cfg.required_features:
            if name not in feats:
                raise ValueError(f"features lack the stored feature {name!r} (base_feature={cfg.base_feature})")
            if tuple(feats[name].shape) != mean_ok:
                raise ValueError(f"feature {name!r} has shape {tuple(feats[name].shape)}, expected {mean_ok}")

    def fuse(self, feats: Mapping[int, Tensor], mask: Tensor) -> Tensor:
        """Adapted per-step features ``[B, T, C]`` (zeros at padded steps) that enter the head."""
        self._check_inputs(feats, mask)
        cfg = self.cfg
        keep = mask[..., None]
        if cfg.input_norm == "sequence":
            feats = {k: _centre_over_steps(v, mask) for k, v in feats.items()}
        source = feats["fc_norm"] if cfg.base_feature == "fc_norm" else feats[cfg.last_layer]
        base = source.masked_fill(~mask[..., None, None], 0.0).mean(dim=2)
        if cfg.mode == "head-only":
            return base.masked_fill(~keep, 0.0)
        if cfg.mode == "side":
            out = base
            for layer in cfg.tapped_layers:   # on the stored cells, pooled after the adapter
                out = out + self.side_adapters[_layer_key(layer)].delta(feats[layer], mask)
            return out.masked_fill(~keep, 0.0)
        outputs = []
        for layer in cfg.tapped_layers:
            key, per_layer = _layer_key(layer), {}
            if "long" in cfg.branches:
                per_layer["long"] = self.long_adapters[key](feats[layer], mask)
            if "short" in cfg.branches:
                per_layer["short"] = self.short_adapters[key](feats[layer], mask)
            outputs.append(per_layer)
        return self.fusion(base, outputs, mask)

    def forward(self, feats: Mapping[int, Tensor], mask: Tensor) -> TALOutput:
        """``feats {layer: [B, T, cells, C]}``, ``mask [B, T]`` -> :class:`TALOutput`."""
        x = self.fuse(feats, mask)
        cls_logits, offsets, masks = self.head(x.transpose(1, 2), mask[:, None, :])
        points = self.head.points([c.shape[1] for c in cls_logits], device=x.device)
        return TALOutput(cls_logits, offsets, masks, points)

    # ------------------------------------------------------------ loss / predict
    def loss(self, out: TALOutput, targets: Sequence[tuple[Tensor, Tensor]]) -> dict[str, Tensor]:
        """ActionFormer losses; ``targets`` = per video ``(segments [M, 2] in steps, labels [M])``.

        Returns ``{"cls_loss", "reg_loss", "final_loss"}``.  The positive-count normaliser is an EMA
        updated only in training mode.
        """
        dev = out.cls_logits[0].device
        targets = [(s.to(dev, torch.float32), lab.to(dev, torch.long)) for s, lab in targets]
        return self.criterion(out.cls_logits, out.offsets, out.masks, out.points, targets)

    losses = loss  # name used in docs/DESIGN.md

    @torch.no_grad()
    def predict(
        self, feats: Mapping[int, Tensor], mask: Tensor, nms: Mapping[str, Any] | None = None
    ) -> list[dict[str, Tensor]]:
        """Detections per video: ``{"segments" [n, 2] (steps), "scores" [n], "labels" [n]}`` on the CPU.

        Runs in eval mode (the previous mode is restored) and in float32 whatever autocast context
        the caller holds: the scores that rank detections are computed as ActionFormer computes them
        (bf16 logits would tie).  ``nms`` holds keyword arguments of
        :func:`~losa.post.postprocess.postprocess` (thresholds, Soft-NMS method/sigma, max_seg_num, ...).
        """
        was_training = self.training
        self.eval()
        device = mask.device.type
        try:
            with torch.autocast(device, enabled=False):
                out = self({k: v.float() for k, v in feats.items()}, mask)
        finally:
            self.train(was_training)
        dets = postprocess(*out, **dict(nms or {}))
        return [{"segments": s, "scores": sc, "labels": lab} for s, sc, lab in dets]

    # ------------------------------------------------------------- optimisation
    def param_groups(self, weight_decay: float, adapter_lr: float | None = None) -> list[dict[str, Any]]:
        """AdamW groups: weights of Linear/Conv layers decay; biases, norms, fusion gates,
        ActionFormer ``Scale`` / drop-path scales and position parameters do not.

        With ``adapter_lr`` the parameters outside the ActionFormer head (adapters, fusion) form their
        own decay / no-decay groups with that learning rate (``"lr"`` in the group; the head keeps the
        optimiser's): four groups, empty ones left out.  Every trainable parameter appears in exactly
        one group.
        """
        head = {id(p) for p in self.head.parameters()}
        groups: dict[tuple[bool, bool], list[nn.Parameter]] = {}
        for module in self.modules():
            for name, p in module.named_parameters(recurse=False):
                if not p.requires_grad:
                    continue
                decays = name == "weight" and isinstance(module, (nn.Linear, nn.Conv1d, nn.Conv2d))
                adapter = adapter_lr is not None and id(p) not in head
                groups.setdefault((adapter, decays), []).append(p)
        out = []
        for adapter in ((False,) if adapter_lr is None else (False, True)):
            for decays in (True, False):
                params = groups.get((adapter, decays), [])
                if not params and adapter_lr is not None:  # the plain two groups stay, even empty
                    continue
                group = {"params": params, "weight_decay": weight_decay if decays else 0.0}
                if adapter:
                    group["lr"] = float(adapter_lr)
                out.append(group)
        return out

    def count_parameters(self) -> dict[str, int]:
        """Trainable parameters per top-level module (``head``, ``fusion``, adapters) and ``total``."""
        counts = {
            name: sum(p.numel() for p in mod.parameters() if p.requires_grad)
            for name, mod in self.named_children()
        }
        counts = {k: v for k, v in counts.items() if v > 0}
        counts["total"] = sum(counts.values())
        return counts
