"""params/thumos14.yaml holds ActionFormer's THUMOS-14 head recipe (no head dropout) and parses."""

from __future__ import annotations

from pathlib import Path

from losa.head.config import HeadConfig
from pipeline.cli_train import GROUPS, _train_section, main as train_main
from pipeline.knobs import collect
from stages.train.config import TrainConfig

PARAMS = Path(__file__).resolve().parents[2] / "params" / "thumos14.yaml"


def test_head_recipe_is_actionformers():
    with train_main.make_context("losa-train", ["--params", str(PARAMS)]) as ctx:
        cli = {k: v for k, v in ctx.params.items() if k != "params_file"}
        vals = collect(cli, GROUPS, _train_section(PARAMS), where="train", source=str(PARAMS))
    head = HeadConfig.from_dict(vals["head"])
    assert head.dropout == 0.0                       # ActionFormer's THUMOS config: no head dropout
    assert (head.embd_dim, head.fpn_dim, head.head_dim, head.n_levels, head.window) == (512, 512, 512, 6, 19)
    tcfg = TrainConfig.from_dict({**vals["train"], "nms": vals["nms"]})
    assert tcfg.max_seq_len == 2304 and tcfg.nms.voting_thresh == 0.7
