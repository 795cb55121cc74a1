"""Make tests/golden/actionformer_head.npz from ActionFormer's own model (not run in CI).

Usage:  python tests/golden/make_actionformer_head.py /path/to/actionformer_release

Builds ActionFormer's ``LocPointTransformer`` (conv-transformer backbone, identity FPN, cls / reg
heads) at a small size with its own random initialisation (drop path off, eval mode), runs its
backbone -> neck -> heads on seeded random *unpadded* features, and writes the weights (its names),
the input and every level's logits and offsets.  Only numbers are written.
"""

from __future__ import annotations

import sys
from pathlib import Path

import numpy as np
import torch

HERE = Path(__file__).parent
SIZES = {"input_dim": 24, "embd_dim": 16, "fpn_dim": 16, "head_dim": 16, "n_head": 4, "n_mha_win_size": 5,
         "backbone_arch": (2, 2, 3), "regression_range": [[0, 4], [4, 8], [8, 16], [16, 10000]],
         "num_classes": 3}
T, BATCH = 64, 2


def main(checkout: str) -> None:
    root = Path(checkout)
    sys.path[:0] = [str(root), str(root / "libs" / "utils")]
    from libs.core.config import _update_config, load_default_config
    from libs.modeling import make_meta_arch

    cfg = load_default_config()
    cfg["dataset"].update(num_classes=SIZES["num_classes"], input_dim=SIZES["input_dim"], max_seq_len=T)
    cfg["model"].update({k: v for k, v in SIZES.items() if k not in ("input_dim", "num_classes")})
    cfg["train_cfg"]["droppath"] = 0.0
    cfg = _update_config(cfg)
    torch.manual_seed(0)
    model = make_meta_arch(cfg["model_name"], **cfg["model"]).eval()
    with torch.no_grad():  # its init leaves LayerNorms at 1/0 and the LayerScales at 1e-4: move them
        for name, p in model.named_parameters():
            if "norm" in name or "scale" in name:
                p.add_(0.3 * torch.randn(p.shape))
    x = torch.randn(BATCH, SIZES["input_dim"], T, generator=torch.Generator().manual_seed(1))
    mask = torch.ones(BATCH, 1, T, dtype=torch.bool)
    with torch.no_grad():
        feats, masks = model.backbone(x, mask)
        fpn, fpn_masks = model.neck(feats, masks)
        cls = model.cls_head(fpn, fpn_masks)
        reg = model.reg_head(fpn, fpn_masks)
    out = {"input": x.numpy()}
    out.update({f"w/{k}": v.numpy() for k, v in model.state_dict().items()})
    out.update({f"cls/{i}": c.permute(0, 2, 1).numpy() for i, c in enumerate(cls)})
    out.update({f"reg/{i}": r.permute(0, 2, 1).numpy() for i, r in enumerate(reg)})
    np.savez_compressed(HERE / "actionformer_head.npz", **out)
    print("wrote", HERE / "actionformer_head.npz", len(out), "arrays")


if __name__ == "__main__":
    main(sys.argv[1])
