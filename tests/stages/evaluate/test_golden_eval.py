"""`evaluate_files` equals ActionFormer's ANETdetection (fixtures: tests/golden/make_actionformer.py),
including a results file holding a video absent from the ground truth (false positives)."""

from __future__ import annotations

import json
import warnings
from pathlib import Path

import pytest

from stages.evaluate.run import evaluate_files

CASES = json.loads((Path(__file__).parents[2] / "golden" / "actionformer_eval.json").read_text())


@pytest.mark.parametrize("case", CASES, ids=[f"case{i}" for i in range(len(CASES))])
def test_matches_actionformer_evaluator(case: dict, tmp_path: Path) -> None:
    db = {v: {"subset": "testing", "annotations": [
        {"segment": a["segment"], "label": f"c{a['label_id']}"} for a in info["annotations"]]}
        for v, info in case["database"].items()}
    ann = tmp_path / "gt.json"
    ann.write_text(json.dumps({"database": db}))
    results = {"results": {v: [{"segment": r["segment"], "label": f"c{r['label_id']}", "score": r["score"]}
                               for r in rows] for v, rows in case["results"].items()}}
    absent = sorted(set(case["results"]) - set(case["database"]))
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        got = evaluate_files(results, ann, "testing", case["tious"], classes=["c0", "c1", "c2"])
    assert any(all(v in str(w.message) for v in absent) for w in caught) == bool(absent)
    assert got["unannotated"] == absent
    assert got["mAP"] == pytest.approx(case["mAP"], abs=1e-9)
    assert got["average_mAP"] == pytest.approx(case["average_mAP"], abs=1e-9)
    for label, aps in case["ap"].items():
        assert got["per_class"][f"c{label}"] == pytest.approx(aps, abs=1e-9)
