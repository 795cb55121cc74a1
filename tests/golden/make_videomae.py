"""Make tests/golden/videomae_small.npz from the official VideoMAEv2 code (not run in CI).

Usage::

    git clone https://github.com/OpenGVLab/VideoMAEv2 /tmp/ref      # any checkout outside the repo
    python tests/golden/make_videomae.py /tmp/ref [--out tests/golden/videomae_small.npz]

Builds the official ``models/modeling_finetune.py`` ``VisionTransformer`` with a small random-init
configuration (width 32, 2 heads, 2 blocks, patch 16, tubelet 2, 4 frames, mean pooling with
``fc_norm``), gives every weight a non-trivial random value (rounded to float16 so the file stays
small; the model computes in float32), and records, at 224 px and at 160 px (the official way: the
model is built with ``img_size=160``):

* ``input_<res>``: the clip ``[1, 3, 4, res, res]`` (float16 values, expanded 4x per side from a
  ``res/4`` grid by ``repeat_interleave`` in the test: ``input_<res>`` stores the small grid);
* ``block<i>_<res>``: output tokens ``[1, N, 32]`` of block i (0-based) under ``eval()``;
* ``features_<res>``: ``forward_features`` = ``fc_norm(mean of all last-block tokens)`` ``[1, 32]``;
* ``sd.<key>``: the official state dict (no ``pos_embed``: the official table is not a parameter).

Only numbers are written; the official code is not copied.
"""
from __future__ import annotations

import argparse
import importlib.util
import json
import sys
from functools import partial
from pathlib import Path

import numpy as np
import torch
from torch import nn

CONFIG = dict(patch_size=16, embed_dim=32, depth=2, num_heads=2, mlp_ratio=4, all_frames=4,
              tubelet_size=2)
UPSAMPLE = 4            # input pixels: each value of the stored grid covers 4x4 pixels
RESOLUTIONS = (224, 160)


def _load_official(checkout: Path):
    path = checkout / "models" / "modeling_finetune.py"
    if not path.is_file():
        sys.exit(f"{path} not found: pass the root of an OpenGVLab/VideoMAEv2 checkout")
    spec = importlib.util.spec_from_file_location("videomae_official_finetune", path)
    module = importlib.util.module_from_spec(spec)
    sys.modules[spec.name] = module          # timm's register_model looks the module up
    spec.loader.exec_module(module)
    return module


def _build(official, img_size: int) -> nn.Module:
    model = official.VisionTransformer(
        img_size=img_size, num_classes=3, qkv_bias=True, use_mean_pooling=True,
        norm_layer=partial(nn.LayerNorm, eps=1e-6), **CONFIG)
    return model.eval()


def _randomise(model: nn.Module, gen: torch.Generator) -> dict[str, torch.Tensor]:
    """Non-trivial values everywhere (norm gains around 1), rounded to float16."""
    sd = {}
    for key, value in model.state_dict().items():
        if key.endswith("weight") and ("norm" in key):
            new = 1.0 + 0.2 * torch.randn(value.shape, generator=gen)
        elif key.endswith("bias") or key.endswith("q_bias") or key.endswith("v_bias"):
            new = 0.1 * torch.randn(value.shape, generator=gen)
        else:
            fan_in = max(1, value[0].numel())
            new = torch.randn(value.shape, generator=gen) / fan_in ** 0.5
        sd[key] = new.half().float()
    model.load_state_dict(sd, strict=True)
    return sd


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("checkout", type=Path, help="root of an OpenGVLab/VideoMAEv2 checkout")
    parser.add_argument("--out", type=Path, default=Path(__file__).with_name("videomae_small.npz"))
    args = parser.parse_args()
    official = _load_official(args.checkout)
    torch.set_num_threads(1)
    gen = torch.Generator().manual_seed(20250107)
    out: dict[str, np.ndarray] = {}
    sd = None
    for res in RESOLUTIONS:
        model = _build(official, res)
        if sd is None:
            sd = _randomise(model, gen)
        else:
            model.load_state_dict(sd, strict=True)
        small = torch.rand(1, 3, CONFIG["all_frames"], res // UPSAMPLE, res // UPSAMPLE, generator=gen)
        small = (small * 4.0 - 2.0).half().float()
        x = small.repeat_interleave(UPSAMPLE, dim=3).repeat_interleave(UPSAMPLE, dim=4)
        captured: list[torch.Tensor] = []
        hooks = [blk.register_forward_hook(lambda _m, _i, o: captured.append(o.detach().clone()))
                 for blk in model.blocks]
        with torch.no_grad():
            features = model.forward_features(x)
        for h in hooks:
            h.remove()
        out[f"input_{res}"] = small.numpy().astype(np.float16)
        for i, tokens in enumerate(captured):
            out[f"block{i}_{res}"] = tokens.numpy().astype(np.float32)
        out[f"features_{res}"] = features.numpy().astype(np.float32)
    for key, value in sd.items():
        if key.startswith("head."):      # the classifier (num_classes=3) is not part of the features
            continue
        out[f"sd.{key}"] = value.numpy().astype(np.float16)
    out["config"] = np.frombuffer(json.dumps({**CONFIG, "upsample": UPSAMPLE}).encode(), dtype=np.uint8)
    np.savez_compressed(args.out, **out)
    print(f"wrote {args.out} ({args.out.stat().st_size / 1024:.0f} KiB, {len(out)} arrays)")


if __name__ == "__main__":
    main()
