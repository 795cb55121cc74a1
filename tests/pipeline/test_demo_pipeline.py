"""The demo pipeline end to end on a reduced demo (the shipped params.yaml, fewer/shorter videos):
videos → losa-demo-backbone (shortened to 40 steps of 8 clips) → losa-extract --checkpoint →
losa-train → losa-eval --run.  It must learn: average mAP clearly above both a chance baseline
(random segments) and a measured threshold.

Measured on the 2-core machine with these settings: LoSA average mAP 0.85 (chance: 0.09), 129 s.
The assertion keeps a wide margin for numerical differences across CPUs/library versions.
"""
from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
from click.testing import CliRunner

from pipeline.cli_demo_backbone import main as backbone_main
from pipeline.cli_eval import main as eval_main
from pipeline.cli_extract import main as extract_main
from pipeline.cli_train import main as train_main
from stages.data.annotations import load_annotations
from stages.demo.data import generate_demo
from stages.evaluate.run import evaluate_files

REPO = Path(__file__).resolve().parents[2]
PARAMS = str(REPO / "params.yaml")
TIOUS = [0.3, 0.4, 0.5, 0.6, 0.7]


pytestmark = pytest.mark.usefixtures("one_torch_thread")


def chance_map(ann, subset: str, seed: int = 0) -> float:
    """Average mAP of 200 random segments per video (random class, score, 2-8 s length)."""
    rng = np.random.default_rng(seed)
    results = {}
    for vid in ann.videos_in(subset):
        dur = ann.videos[vid]["duration"]
        dets = []
        for _ in range(200):
            length = rng.uniform(2.0, 8.0)
            start = rng.uniform(0.0, max(dur - length, 0.1))
            dets.append({"label": str(rng.choice(ann.classes)), "score": float(rng.random()),
                         "segment": [start, min(start + length, dur)]})
        results[vid] = dets
    return evaluate_files({"results": results}, ann, subset, TIOUS)["average_mAP"]


def run(cli, args):
    res = CliRunner().invoke(cli, args, catch_exceptions=False)
    assert res.exit_code == 0, res.output
    return res.output


def test_reduced_demo_learns_well_above_chance(tmp_path):
    demo = tmp_path / "demo"
    generate_demo(demo, num_videos=32, seed=1, min_len=20, max_len=30, test_fraction=0.33)
    backbone = tmp_path / "backbone.pth"   # the demo_backbone stage, shortened
    run(backbone_main, ["--params", PARAMS, "--videos", str(demo / "videos"), "--annotations",
                        str(demo / "annotations.json"), "--out", str(backbone), "--steps", "40",
                        "--batch-clips", "8", "--eval-clips", "0", "--no-progress"])
    store = tmp_path / "features.zarr"
    run(extract_main, [str(demo / "videos"), "--store", str(store), "--params", PARAMS, "--checkpoint",
                       str(backbone), "--no-progress"])
    run_dir = tmp_path / "run"
    ann_path = demo / "annotations.json"
    run(train_main, ["--params", PARAMS, "--store", str(store), "--annotations", str(ann_path),
                     "--out", str(run_dir), "--no-progress"])
    metrics_path = tmp_path / "eval.json"
    run(eval_main, ["--params", PARAMS, "--run", str(run_dir), "--out", str(metrics_path)])
    metrics = json.loads(metrics_path.read_text())
    chance = chance_map(load_annotations(ann_path), "testing")
    assert metrics["tious"] == TIOUS
    print(f"demo test: average mAP {metrics['average_mAP']:.4f}, chance {chance:.4f}")
    assert metrics["average_mAP"] > chance + 0.3, (metrics["average_mAP"], chance)
    assert metrics["average_mAP"] > 0.55, metrics["average_mAP"]
