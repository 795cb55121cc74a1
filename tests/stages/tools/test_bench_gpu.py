"""`losa-bench gpu` runs end to end on a CPU with tiny shapes and writes the JSON it promises."""
from __future__ import annotations

import json

import pytest
import torch
from click.testing import CliRunner

from pipeline.cli_bench import main
from stages.tools.bench_gpu import sdpa_backend

pytestmark = pytest.mark.usefixtures("one_torch_thread")


def test_gpu_check_tiny_on_cpu(tmp_path):
    out = tmp_path / "gpu.json"
    res = CliRunner().invoke(main, ["gpu", "--tiny", "--device", "cpu", "--steps", "32", "--depths", "5,8",
                                    "--peak-tflops", "1", "--out", str(out)])
    assert res.exit_code == 0, res.output
    data = json.loads(out.read_text())
    ext = data["extraction"]
    assert ext["preset"] == "tiny" and ext["precision"] == "bf16"
    assert ext["full_clips_s"] > 0 and ext["backbone_clips_s"] > 0
    assert ext["full_over_backbone"] == pytest.approx(ext["full_clips_s"] / ext["backbone_clips_s"])
    assert ext["mfu"] == pytest.approx(ext["achieved_tflops"] / 1.0)
    assert data["reference_fp32"]["precision"] == "fp32" and data["reference_fp32"]["backbone_clips_s"] > 0
    rows = data["training"]["rows"]
    assert [(r["mode"], r["encoder_depth"]) for r in rows] == [("head-only", 8), ("losa", 5), ("losa", 8)]
    # 4 taps + the last block whatever the encoder's depth: the model sees the same shapes
    assert all(len(r["layers"]) == 5 and r["layers"][-1] == r["encoder_depth"] for r in rows)
    assert all(r["step_s"] > 0 for r in rows)
    assert data["training"]["losa_over_head_only"] == pytest.approx(rows[-1]["step_s"] / rows[0]["step_s"])
    assert data["sdpa_backend"] in {"flash_attention", "efficient_attention", "cudnn_attention", "math"}
    assert data["targets"]["under_8_minutes"] is True
    assert "GPU check on cpu" in res.output


def test_gpu_check_rejects_bad_depths():
    res = CliRunner().invoke(main, ["gpu", "--tiny", "--device", "cpu", "--depths", "3"])
    assert res.exit_code == 2
    assert "--depths" in res.output and "Traceback" not in res.output


def test_sdpa_backend_names_the_math_kernel_when_forced():
    from torch.nn.attention import SDPBackend, sdpa_kernel

    assert sdpa_backend(torch.device("cpu"), torch.float32, 2, 16, 8) in {"flash_attention", "math"}
    with sdpa_kernel([SDPBackend.MATH]):
        assert sdpa_backend(torch.device("cpu"), torch.float32, 2, 16, 8) == "math"
