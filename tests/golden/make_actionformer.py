"""Make tests/golden/actionformer.npz and actionformer_eval.json from ActionFormer (not run in CI).

Usage:  python tests/golden/make_actionformer.py /path/to/actionformer_release

The checkout's ``libs/utils`` must hold the built ``nms_1d_cpu`` extension
(``cd libs/utils && python setup.py build_ext --inplace``, outside this repository) and pandas /
joblib must be importable (the evaluator).  The official functions run on seeded random inputs;
only inputs and outputs (numbers) are written.
"""

from __future__ import annotations

import json
import sys
import tempfile
from pathlib import Path
from types import SimpleNamespace

import numpy as np
import torch

HERE = Path(__file__).parent
CLASSES = 3


def _candidates(g: torch.Generator, n: int, classes: int, span: float = 300.0):
    centre = torch.rand(n, generator=g) * span
    length = torch.rand(n, generator=g) ** 2 * 40 + 1.0
    segs = torch.stack([centre - length / 2, centre + length / 2], 1)
    scores = 0.002 + torch.rand(n, generator=g) ** 2 * 0.99
    return segs, scores, torch.randint(0, classes, (n,), generator=g)


def _points(levels: int, steps: int, ranges: list[tuple[float, float]]) -> torch.Tensor:
    rows = []
    for lv in range(levels):
        stride = 2 ** lv
        t = torch.arange(0, steps, stride, dtype=torch.float32)
        lo, hi = ranges[lv]
        rows.append(torch.stack([t, torch.full_like(t, lo), torch.full_like(t, hi),
                                 torch.full_like(t, float(stride))], 1))
    return torch.cat(rows)


def _eval_cases(g: np.random.Generator) -> list[dict]:
    """ActivityNet-style cases: GT database, predictions, the official mAP per tIoU and class."""
    cases = []
    for case in range(3):
        videos = [f"v{i}" for i in range(4)]
        database, results = {}, {}
        for v in videos:
            anns = []
            for _ in range(int(g.integers(1, 4))):
                s = float(g.uniform(0, 80))
                anns.append({"segment": [s, s + float(g.uniform(2, 20))], "label_id": int(g.integers(0, CLASSES))})
            database[v] = {"subset": "test", "annotations": anns}
        pred_videos = videos + (["ghost"] if case >= 1 else [])      # a video absent from the GT
        for v in pred_videos:
            rows = []
            base = database.get(v, {"annotations": [{"segment": [10.0, 20.0], "label_id": 0}]})
            for a in base["annotations"]:
                for _ in range(3):
                    s0, e0 = a["segment"]
                    jit = float(g.normal(0, 2.0))
                    rows.append({"segment": [s0 + jit, e0 + jit + float(g.normal(0, 1.0))],
                                 "label_id": int(a["label_id"]) if g.random() > 0.2 else int(g.integers(0, CLASSES)),
                                 "score": float(g.uniform(0.05, 1.0))})
            results[v] = rows
        cases.append({"database": database, "results": results})
    return cases


def main(checkout: str) -> None:
    root = Path(checkout)
    sys.path[:0] = [str(root), str(root / "libs" / "utils")]
    from libs.modeling.losses import ctr_diou_loss_1d, sigmoid_focal_loss
    from libs.modeling.meta_archs import PtTransformer
    for alias, typ in (("float", float), ("int", int)):   # the evaluator predates NumPy 1.24
        if alias not in np.__dict__:
            setattr(np, alias, typ)
    from libs.utils.metrics import ANETdetection
    from libs.utils.nms import batched_nms

    g = torch.Generator().manual_seed(0)
    out: dict[str, np.ndarray] = {}
    # focal loss (alpha .25, gamma 2) and DIoU on random inputs
    logits = torch.randn(64, 5, generator=g) * 3
    targets = (torch.rand(64, 5, generator=g) > 0.7).float()
    out.update(focal_logits=logits.numpy(), focal_targets=targets.numpy(),
               focal_loss=sigmoid_focal_loss(logits, targets, reduction="none").numpy())
    pred_off = torch.rand(64, 2, generator=g) * 10
    tgt_off = torch.rand(64, 2, generator=g) * 10
    out.update(diou_pred=pred_off.numpy(), diou_target=tgt_off.numpy(),
               diou_loss=ctr_diou_loss_1d(pred_off, tgt_off, reduction="none").numpy())
    # label assignment with centre sampling (radius 1.5) on a 3-level pyramid of 64 steps
    pts = _points(3, 64, [(0, 4), (4, 8), (8, 10000)])
    gt_seg = torch.tensor([[3.0, 9.5], [5.0, 12.0], [20.0, 50.0], [20.0, 50.0005], [40.0, 44.0]])
    gt_lab = torch.tensor([0, 1, 2, 1, 0])
    me = SimpleNamespace(num_classes=CLASSES, train_center_sample="radius", train_center_sample_radius=1.5)
    cls_t, reg_t = PtTransformer.label_points_single_video(me, pts, gt_seg, gt_lab)
    out.update(assign_points=pts.numpy(), assign_segments=gt_seg.numpy(), assign_labels=gt_lab.numpy(),
               assign_cls=cls_t.numpy(), assign_reg=reg_t.numpy())
    # Soft-NMS: per class without voting, class-agnostic with voting 0.7
    segs, scores, labels = _candidates(g, 600, CLASSES)
    out.update(nms_segs=segs.numpy(), nms_scores=scores.numpy(), nms_labels=labels.numpy())
    for name, multiclass, voting in (("multiclass", True, 0.0), ("agnostic_voting", False, 0.7)):
        s, sc, lab = batched_nms(segs.clone(), scores.clone(), labels.clone(), 0.1, 1e-3, 200,
                                 use_soft_nms=True, multiclass=multiclass, sigma=0.5, voting_thresh=voting)
        out.update({f"nms_{name}_segs": s.numpy(), f"nms_{name}_scores": sc.numpy(),
                    f"nms_{name}_labels": lab.numpy()})
    np.savez_compressed(HERE / "actionformer.npz", **out)

    # the evaluator (ANETdetection) on small cases, one with a video absent from the GT
    tious = [0.3, 0.5, 0.7]
    cases = _eval_cases(np.random.default_rng(0))
    for case in cases:
        with tempfile.TemporaryDirectory() as tmp:
            ant = Path(tmp) / "gt.json"
            ant.write_text(json.dumps({"database": case["database"]}))
            det = ANETdetection(str(ant), split="test", tiou_thresholds=np.array(tious), num_workers=1)
            rows = [(v, r["segment"][0], r["segment"][1], r["label_id"], r["score"])
                    for v, rs in case["results"].items() for r in rs]
            preds = {"video-id": [r[0] for r in rows], "t-start": np.array([r[1] for r in rows]),
                     "t-end": np.array([r[2] for r in rows]), "label": np.array([r[3] for r in rows]),
                     "score": np.array([r[4] for r in rows])}
            mAP, avg, _ = det.evaluate(preds, verbose=False)
            case["tious"] = tious
            case["mAP"] = [float(x) for x in mAP]
            case["average_mAP"] = float(avg)
            case["ap"] = {str(lab): [float(x) for x in det.ap[:, i]]
                          for lab, i in det.activity_index.items()}
    (HERE / "actionformer_eval.json").write_text(json.dumps(cases, indent=1) + "\n")
    print("wrote", HERE / "actionformer.npz", HERE / "actionformer_eval.json")


if __name__ == "__main__":
    main(sys.argv[1])
