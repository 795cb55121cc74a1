"""Long-Short-range Gated Fusion: merge adapter outputs of tapped layers into last-layer features.

Every branch output ``a_{l,b} [B, T, d]`` (layer ``l``, branch ``b`` in e.g. ``("long", "short")``)
is projected ``d -> C`` by its own Linear ``P_{l,b}`` and merged into ``base [B, T, C]`` (the
last-layer features averaged over cells):

* ``"gated"``:   ``base + sum_{l,b} g_{l,b} * P_{l,b}(a_{l,b})`` with per-channel gates
  ``g in R^C`` initialised to zero - at step 0 the output equals ``base`` exactly, so a LoSA model
  starts as the head-only model.
* ``"sigmoid"``: data-dependent gates ``alpha_{l,b} * sigmoid(W_{l,b} [base; P(a)] + bias)`` with
  ``alpha`` zero-initialised per channel (also starts at ``base``).
* ``"sum"``:     ``base + sum P(a)`` (plain initialisation; ablation without gates).
* ``"concat"``:  ``Linear([base; P(a_1); ...] -> C)`` initialised as the identity on ``base`` and
  zero on the branches (starts at ``base``).

Padded steps (``mask`` False) are exact zeros in the output.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence

import torch
from torch import Tensor, nn
from losa.errors import LosaError

__all__ = ["FUSION_MODES", "GatedFusion", "LongShortGatedFusion"]

FUSION_MODES = ("gated", "sigmoid", "sum", "concat")


class LongShortGatedFusion(nn.Module):
    """Fuse ``n_layers x len(branches)`` adapter outputs ``[B, T, d]`` into ``base [B, T, C]``."""

    def __init__(
        self,
        channels: int,
        dim: int,
        n_layers: int,
        branches: Sequence[str] = ("long", "short"),
        mode: str = "gated",
    ) -> None:
        super().__init__()
        if mode not in FUSION_MODES:
            raise LosaError(f"unknown fusion mode {mode!r}; choose from {', '.join(FUSION_MODES)}")
        if n_layers < 1 or not branches:
            raise LosaError(
                f"fusion needs at least one layer and one branch, got {n_layers}, {tuple(branches)}"
            )
        if len(set(branches)) != len(branches):
            raise LosaError(f"duplicate branch names in {tuple(branches)}")
        self.channels, self.dim, self.n_layers = channels, dim, n_layers
        self.branches = tuple(branches)
        self.mode = mode
        n = n_layers * len(self.branches)
        self.proj = nn.ModuleList(nn.Linear(dim, channels) for _ in range(n))
        if mode == "gated":
            self.gates = nn.Parameter(torch.zeros(n, channels))
        elif mode == "sigmoid":
            self.gate_alpha = nn.Parameter(torch.zeros(n, channels))
            self.gate_fc = nn.ModuleList(nn.Linear(2 * channels, channels) for _ in range(n))
        elif mode == "concat":
            self.merge = nn.Linear((n + 1) * channels, channels)
            with torch.no_grad():
                self.merge.weight.zero_()
                self.merge.weight[:, :channels].copy_(torch.eye(channels))
                self.merge.bias.zero_()

    def _flatten(self, outputs: Sequence[Mapping[str, Tensor]], base: Tensor) -> list[Tensor]:
        if len(outputs) != self.n_layers:
            raise ValueError(f"fusion expects outputs of {self.n_layers} layers, got {len(outputs)}")
        flat = []
        for i, per_layer in enumerate(outputs):
            for name in self.branches:
                if name not in per_layer:
                    raise ValueError(f"fusion input for tapped layer #{i} lacks branch {name!r}")
                a = per_layer[name]
                if a.shape != (*base.shape[:2], self.dim):
                    raise ValueError(
                        f"branch {name!r} of tapped layer #{i} has shape {tuple(a.shape)}, "
                        f"expected {(*base.shape[:2], self.dim)}"
                    )
                flat.append(a)
        return flat

    def _gated_sum(self, flat: Sequence[Tensor]) -> Tensor:
        """``sum_i g_i * P_i(a_i)`` (``g = 1`` for ``"sum"``) as one matmul: the branches side by side
        ``[B, T, n*d]`` against the projections stacked with their gates folded in,
        ``g * (W a + b) = (g W) a + g b``.  The same function of the same parameters (fp32 rounding
        aside), one projection instead of ``n`` plus ``2n`` element-wise passes over ``[B, T, C]``."""
        gates = self.gates if self.mode == "gated" else None
        weights, bias = [], None
        for i, p in enumerate(self.proj):
            w, b = p.weight, p.bias
            if gates is not None:
                w, b = w * gates[i][:, None], b * gates[i]
            weights.append(w)
            bias = b if bias is None else bias + b
        return torch.nn.functional.linear(torch.cat(list(flat), dim=-1), torch.cat(weights, dim=1), bias)

    def forward(self, base: Tensor, outputs: Sequence[Mapping[str, Tensor]], mask: Tensor) -> Tensor:
        """``base [B, T, C]``; ``outputs[l][branch] [B, T, d]``; ``mask [B, T]`` -> ``[B, T, C]``."""
        if base.dim() != 3 or base.shape[-1] != self.channels:
            raise ValueError(f"fusion base must be [B, T, {self.channels}], got {tuple(base.shape)}")
        if mask.shape != base.shape[:2] or mask.dtype != torch.bool:
            raise ValueError(
                f"mask must be bool {tuple(base.shape[:2])}, got {mask.dtype} {tuple(mask.shape)}"
            )
        flat = self._flatten(outputs, base)
        if self.mode in ("gated", "sum"):
            out = base + self._gated_sum(flat)
            return out.masked_fill(~mask[..., None], 0.0)
        projected = [p(a) for p, a in zip(self.proj, flat)]
        if self.mode == "sigmoid":
            out = base
            for alpha, fc, p in zip(self.gate_alpha, self.gate_fc, projected):
                out = out + alpha * torch.sigmoid(fc(torch.cat([base, p], dim=-1))) * p
        else:
            out = self.merge(torch.cat([base, *projected], dim=-1))
        return out.masked_fill(~mask[..., None], 0.0)


GatedFusion = LongShortGatedFusion
"""Alias under the name used in docs/DESIGN.md."""
