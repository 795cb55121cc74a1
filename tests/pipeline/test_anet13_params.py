"""params/anet13.yaml reproduces the anchors' ActivityNet-1.3 protocol and every key is accepted."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
from click.testing import CliRunner

from losa.head.config import HeadConfig
from pipeline.cli_eval import main as eval_main
from pipeline.cli_train import GROUPS, _train_section, main as train_main
from pipeline.knobs import collect
from stages.train.config import TrainConfig

PARAMS = Path(__file__).resolve().parents[2] / "params" / "anet13.yaml"


def test_train_section_is_the_protocol():
    with train_main.make_context("losa-train", ["--params", str(PARAMS)]) as ctx:
        cli = {k: v for k, v in ctx.params.items() if k != "params_file"}
        vals = collect(cli, GROUPS, _train_section(PARAMS), where="train", source=str(PARAMS))
    tcfg = TrainConfig.from_dict({**vals["train"], "nms": vals["nms"]})
    assert tcfg.resample_steps == 192 and tcfg.max_seq_len == 192 and tcfg.class_agnostic
    assert tcfg.crop_ratio == (0.9, 1.0) and tcfg.lr == 1e-3 and tcfg.batch_size == 16
    n = tcfg.nms
    assert (n.method, n.sigma, n.voting_thresh, n.max_seg_num, n.multiclass) == ("gaussian", 0.75, 0.9, 100, False)
    head = HeadConfig.from_dict(vals["head"])
    assert head.train_label_smoothing == 0.1 and head.embd_dim == 256 and head.n_levels == 6


def test_evaluate_section_fuses_top2_sqrt_at_anet_tious(tmp_path):
    ann = {"classes": ["A", "B"], "database": {"v": {"subset": "validation", "duration": 30.0,
                                                      "annotations": [{"label": "B", "segment": [2, 9]}]}}}
    dets = {"results": {"v": [{"label": "action", "score": 0.49, "segment": [2, 9]}]}}
    scores = {"class": ["A", "B"], "results": {"v": [0.25, 0.64]}}
    for name, data in (("ann.json", ann), ("dets.json", dets), ("scores.json", scores)):
        (tmp_path / name).write_text(json.dumps(data))
    out = tmp_path / "fused.json"
    res = CliRunner().invoke(eval_main, [
        "--params", str(PARAMS), "--results", str(tmp_path / "dets.json"), "--annotations",
        str(tmp_path / "ann.json"), "--classifier-scores", str(tmp_path / "scores.json"),
        "--predictions-out", str(out), "--out", str(tmp_path / "m.json")])
    assert res.exit_code == 0, res.output
    metrics = json.loads((tmp_path / "m.json").read_text())
    assert metrics["tious"] == pytest.approx([0.5 + 0.05 * i for i in range(10)])
    assert metrics["average_mAP"] == 1.0
    fused = json.loads(out.read_text())["results"]["v"]
    # top-2: B sqrt(0.64 * 0.49) = 0.56, A sqrt(0.25 * 0.49) = 0.35
    assert [(d["label"], round(d["score"], 4)) for d in fused] == [("B", 0.56), ("A", 0.35)]
