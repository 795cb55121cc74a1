"""Make tests/golden/opentad_adapter.npz from OpenTAD's AdaTAD adapter (not run in CI).

Usage:  python tests/golden/make_opentad.py /path/to/OpenTAD-checkout

Runs the ``Adapter`` class of the checkout's ``opentad/models/backbones/vit_ladder.py`` (its own
source, executed as is) on random inputs with random weights, and stores inputs, weights and outputs
(numbers only).  OpenTAD's package imports mmcv / mmengine / mmaction; only the adapter's class
definition is executed here, with ``BaseModule`` standing in as ``torch.nn.Module`` and the two
mmengine init helpers re-stated (they only set the initial weights, which are overwritten below).
"""

from __future__ import annotations

import ast
import math
import sys
from pathlib import Path

import numpy as np
import torch
import torch.utils.checkpoint as cp
from torch import Tensor, nn

OUT = Path(__file__).with_name("opentad_adapter.npz")


def load_adapter_class(checkout: Path):
    src_path = checkout / "opentad" / "models" / "backbones" / "vit_ladder.py"
    tree = ast.parse(src_path.read_text())
    node = next(n for n in tree.body if isinstance(n, ast.ClassDef) and n.name == "Adapter")
    code = ast.get_source_segment(src_path.read_text(), node)

    def trunc_normal_init(module, mean=0.0, std=1.0, a=-2.0, b=2.0, bias=0.0):
        nn.init.trunc_normal_(module.weight, mean, std, a, b)
        nn.init.constant_(module.bias, bias)

    def constant_init(module, val, bias=0.0):
        nn.init.constant_(module.weight, val)
        nn.init.constant_(module.bias, bias)

    ns = {"torch": torch, "nn": nn, "Tensor": Tensor, "math": math, "cp": cp,
          "BaseModule": nn.Module, "trunc_normal_init": trunc_normal_init,
          "constant_init": constant_init}
    exec(compile(code, str(src_path), "exec"), ns)
    return ns["Adapter"]


def main(checkout: str) -> None:
    Adapter = load_adapter_class(Path(checkout))
    torch.manual_seed(0)
    embed, ratio, steps, t_sub, grid = 32, 0.25, 6, 2, 2
    ad = Adapter(embed_dims=embed, mlp_ratio=ratio, kernel_size=3, temporal_size=steps * t_sub)
    for p in ad.parameters():                       # random weights everywhere (up is zero at init)
        nn.init.normal_(p, std=0.3)
    x = torch.randn(1, steps * t_sub * grid * grid, embed)
    with torch.no_grad():
        y = ad(x, grid, grid)
    sd = {f"w_{k.replace('.', '__')}": v.detach().numpy() for k, v in ad.state_dict().items()}
    np.savez_compressed(OUT, x=x.numpy(), y=y.numpy(), steps=steps, t_sub=t_sub, grid=grid,
                        embed=embed, hidden=int(embed * ratio), **sd)
    print(f"wrote {OUT} ({', '.join(sorted(sd))})")


if __name__ == "__main__":
    main(sys.argv[1])
