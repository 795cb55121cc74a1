"""Make tests/golden/actionformer_fusion.json: ActionFormer's score fusion
(``libs/utils/postprocessing.py: postprocess_results``, top-2 classes, sqrt) on random detections.

Usage (not run in CI; ActionFormer's ``libs.utils`` needs pandas)::

    python tests/golden/make_fusion.py /path/to/actionformer_release
"""
from __future__ import annotations

import json
import sys
import tempfile
import types
from pathlib import Path

import numpy as np


def main(af_root: str) -> None:
    sys.path.insert(0, str(Path(af_root).resolve()))
    sys.modules.setdefault("nms_1d_cpu", types.ModuleType("nms_1d_cpu"))
    from libs.utils.postprocessing import postprocess_results

    rng = np.random.default_rng(0)
    classes = [f"c{k}" for k in range(6)]
    videos = ["v1", "v2", "v3"]
    dets = {"video-id": [], "t-start": [], "t-end": [], "label": [], "score": []}
    for vid in videos:
        for _ in range(int(rng.integers(3, 8))):
            s = float(rng.uniform(0, 50))
            dets["video-id"].append(vid)
            dets["t-start"].append(s)
            dets["t-end"].append(s + float(rng.uniform(1, 20)))
            dets["label"].append(0)
            dets["score"].append(float(rng.uniform(0.01, 1)))
    scores = {v: rng.dirichlet(np.ones(len(classes))).tolist() for v in videos}
    with tempfile.TemporaryDirectory() as tmp:
        path = Path(tmp) / "cls.json"
        path.write_text(json.dumps({"results": scores, "class": classes}))
        arrays = {k: np.asarray(v) for k, v in dets.items()}
        out = postprocess_results(arrays, str(path), num_pred=5, topk=2)
    fused = [[str(v), float(s), float(e), classes[int(lab)], float(sc)] for v, s, e, lab, sc in
             zip(out["video-id"], out["t-start"], out["t-end"], out["label"], out["score"])]
    payload = {"classes": classes, "class_scores": scores, "num_pred": 5, "topk": 2,
               "detections": {v: [{"label": "action", "score": sc, "segment": [s, e]}
                                  for vv, s, e, _, sc in zip(*dets.values()) if vv == v] for v in videos},
               "fused": fused}
    target = Path(__file__).with_name("actionformer_fusion.json")
    target.write_text(json.dumps(payload, indent=1))
    print(f"wrote {target}")


if __name__ == "__main__":
    main(sys.argv[1])
