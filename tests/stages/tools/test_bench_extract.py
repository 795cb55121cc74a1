"""`losa-bench extract --rounds N`: backbone-only and full extraction interleaved, medians reported."""
from __future__ import annotations

import json
import statistics

import pytest
from click.testing import CliRunner

from pipeline.cli_bench import main

pytestmark = pytest.mark.usefixtures("one_torch_thread")


def test_rounds_interleave_and_report_medians(tmp_path):
    out = tmp_path / "ext.json"
    res = CliRunner().invoke(main, ["extract", "--preset", "tiny", "--resolution", "32", "--frames", "4",
                                    "--clip-stride", "2", "--batch-clips", "8", "--videos", "1", "--seconds", "1.5",
                                    "--video-size", "40", "--layers", "1", "--device", "cpu", "--rounds", "3",
                                    "--out", str(out)])
    assert res.exit_code == 0, res.output
    data = json.loads(out.read_text())
    pairs = data["full_over_backbone_rounds"]
    assert data["rounds"] == 3 and len(pairs) == 3 and all(p > 0 for p in pairs)
    assert data["full_over_backbone"] == pytest.approx(statistics.median(pairs), abs=1e-4)
    assert "medians of 3 interleaved rounds" in res.output
