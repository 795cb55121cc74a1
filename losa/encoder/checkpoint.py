"""Conversion between official VideoMAEv2 state dicts and :class:`losa.encoder.backbone.VideoViT`.

Pure functions: the caller loads the file (``torch.load(path, map_location="cpu",
weights_only=True)``) and passes the resulting mapping here.

Official layout (fine-tuned, distilled and pre-training checkpoints)::

    patch_embed.proj.{weight,bias}
    blocks.N.norm1.{weight,bias}  blocks.N.attn.qkv.weight  blocks.N.attn.{q_bias,v_bias}
    blocks.N.attn.proj.{weight,bias}  blocks.N.norm2.{weight,bias}  blocks.N.mlp.fc{1,2}.{weight,bias}
    fc_norm.{weight,bias}                    (final LayerNorm of the mean token: the clip feature)
    norm.* / head.*                          (classifier side: not used for features)

possibly nested under ``model`` / ``module`` / ``state_dict`` and, for pre-training checkpoints,
prefixed ``encoder.`` next to ``decoder.*``, ``encoder_to_decoder.*`` and ``mask_token``.
VideoMAEv2 has no key bias: our fused ``qkv.bias`` is ``cat(q_bias, 0, v_bias)``.
``fc_norm`` is loaded when the checkpoint has it (fine-tuned and distilled checkpoints); pre-training
checkpoints have none, so it is optional unless ``require_fc_norm`` (the caller needs the clip feature).
"""
from __future__ import annotations

import re
from collections.abc import Mapping
from typing import Any

import torch
from torch import Tensor

from losa.encoder.backbone import VideoViT
from losa.errors import LosaError

__all__ = [
    "CheckpointError",
    "convert_official_state_dict",
    "load_official_checkpoint",
    "to_official_state_dict",
]

_NESTING_KEYS = ("model", "module", "state_dict")
_PREFIXES = ("encoder.", "backbone.")
# Keys (after prefix removal) that are legitimately present but carry nothing the tapper needs.
_IGNORED = re.compile(
    r"^(head\.|norm\.|decoder\.|decoder_|encoder_to_decoder\.|cls_head\.|mask_token$|pos_embed$)"
)
_BLOCK = re.compile(r"^blocks\.(\d+)\.")
_FC_NORM = ("fc_norm.weight", "fc_norm.bias")
_MAX_LISTED = 8


class CheckpointError(LosaError):
    """The checkpoint does not fit the model; the message lists every offending key."""


def _is_tensor_map(sd: Mapping[str, Any]) -> bool:
    return any(isinstance(v, Tensor) for v in sd.values())


def _unwrap(sd: Mapping[str, Any]) -> Mapping[str, Any]:
    """Descend through ``model``/``module``/``state_dict`` wrappers until tensors appear."""
    for _ in range(4):
        if _is_tensor_map(sd):
            return sd
        inner = next((sd[k] for k in _NESTING_KEYS if isinstance(sd.get(k), Mapping)), None)
        if inner is None:
            break
        sd = inner
    if not _is_tensor_map(sd):
        keys = _listing(sorted(map(str, sd)))
        raise CheckpointError(f"checkpoint holds no tensors (top-level keys: {keys})")
    return sd


def _strip_prefixes(sd: Mapping[str, Any]) -> dict[str, Any]:
    """Drop a DDP ``module.`` prefix and an ``encoder.``/``backbone.`` prefix.

    Keys outside the prefix (decoder.*, mask_token, ...) are kept as they are.
    """
    keys = list(sd)
    if keys and all(k.startswith("module.") for k in keys):
        sd = {k[len("module."):]: v for k, v in sd.items()}
    for prefix in _PREFIXES:
        if any(k.startswith(prefix + "patch_embed.") or k.startswith(prefix + "blocks.") for k in sd):
            return {(k[len(prefix):] if k.startswith(prefix) else k): v for k, v in sd.items()}
    return dict(sd)


def _listing(items: list[str]) -> str:
    shown = ", ".join(items[:_MAX_LISTED])
    more = len(items) - _MAX_LISTED
    return shown + (f", ... (+{more} more)" if more > 0 else "")


def _shape(value: Any) -> str:
    return str(tuple(value.shape)) if isinstance(value, Tensor) else type(value).__name__


def convert_official_state_dict(sd: Mapping[str, Any], model: VideoViT,
                                require_fc_norm: bool = False) -> dict[str, Tensor]:
    """Map an official VideoMAEv2 state dict onto ``model``'s parameter names.

    ``fc_norm.*`` is left out of the result when the checkpoint has none, unless ``require_fc_norm``.
    Raises :class:`CheckpointError` naming all unknown, missing and mis-shaped keys at once.
    """
    if not isinstance(sd, Mapping):
        raise CheckpointError(f"checkpoint is a {type(sd).__name__}, expected a mapping of tensors")
    src = _strip_prefixes(_unwrap(sd))
    target = {k: v.shape for k, v in model.state_dict().items()}
    out: dict[str, Tensor] = {}
    unknown: list[str] = []
    missing: list[str] = []
    misshaped: list[str] = []
    used: set[str] = set()

    def take(src_key: str, dst_key: str, shape: torch.Size) -> Tensor | None:
        value = src.get(src_key)
        used.add(src_key)
        if value is None:
            missing.append(src_key)
            return None
        if not isinstance(value, Tensor) or value.shape != shape:
            misshaped.append(f"{src_key} {_shape(value)} != {tuple(shape)}")
            return None
        return value

    for key, shape in target.items():
        if key in _FC_NORM and not require_fc_norm and not any(k in src for k in _FC_NORM):
            continue                                         # pre-training checkpoint: no fc_norm
        if key.endswith("attn.qkv.bias"):
            if key in src:                                   # already fused (e.g. our own export)
                value = take(key, key, shape)
            else:
                stem = key[: -len("qkv.bias")]
                third = torch.Size([shape[0] // 3])
                q_bias = take(stem + "q_bias", key, third)
                v_bias = take(stem + "v_bias", key, third)
                value = None
                if q_bias is not None and v_bias is not None:
                    value = torch.cat([q_bias, torch.zeros_like(q_bias), v_bias])
        else:
            value = take(key, key, shape)
        if value is not None:
            out[key] = value

    for key in src:
        if key not in used and not _IGNORED.match(key):
            unknown.append(key)
    if unknown or missing or misshaped:
        raise CheckpointError(_error_message(src, model, unknown, missing, misshaped))
    return out


def _error_message(src: Mapping[str, Any], model: VideoViT, unknown: list[str],
                   missing: list[str], misshaped: list[str]) -> str:
    parts = [f"checkpoint does not fit backbone {model.cfg.name}"]
    blocks = {int(m.group(1)) for k in src if (m := _BLOCK.match(k))}
    n_blocks = max(blocks) + 1 if blocks else 0
    if n_blocks != model.depth:
        parts[0] += f" (checkpoint has {n_blocks} blocks, {model.cfg.name} has {model.depth})"
    for label, keys in (("unknown", unknown), ("missing", missing), ("mis-shaped", misshaped)):
        if keys:
            parts.append(f"{len(keys)} {label} key{'s' if len(keys) > 1 else ''}: {_listing(keys)}")
    if set(_FC_NORM) & set(missing) and not set(missing) - set(_FC_NORM):
        parts.append("the clip feature fc_norm(mean token) needs a fine-tuned or distilled checkpoint "
                     "(pre-training checkpoints have no fc_norm)")
    return "; ".join(parts)


def load_official_checkpoint(model: VideoViT, sd: Mapping[str, Any], require_fc_norm: bool = False) -> bool:
    """Convert ``sd`` and load it into ``model`` in place (strict but for an absent ``fc_norm``).

    Returns True when ``fc_norm`` came from the checkpoint (else it keeps its current values).
    """
    converted = convert_official_state_dict(sd, model, require_fc_norm)
    missing, unexpected = model.load_state_dict(converted, strict=False)
    if unexpected or set(missing) - set(_FC_NORM):   # cannot happen after a successful conversion
        raise CheckpointError(f"checkpoint does not fit backbone {model.cfg.name}: "
                              f"missing {sorted(missing)}, unexpected {sorted(unexpected)}")
    return not missing


def to_official_state_dict(model: VideoViT) -> dict[str, Tensor]:
    """Export ``model`` in the official VideoMAEv2 key layout (``q_bias``/``v_bias``).

    The key bias is dropped: it adds ``q . b_k`` to every score of a query, which softmax cancels,
    so the exported weights give identical block outputs.
    """
    out: dict[str, Tensor] = {}
    for key, value in model.state_dict().items():
        if key.endswith("attn.qkv.bias"):
            stem = key[: -len("qkv.bias")]
            q_bias, _, v_bias = value.detach().clone().chunk(3)
            out[stem + "q_bias"] = q_bias
            out[stem + "v_bias"] = v_bias
        else:
            out[key] = value.detach().clone()
    return out
