"""Multi-label data end to end: overlapping actions of two classes survive loading, windows,
target assignment and per-class NMS; class-agnostic NMS would merge them (so the multi-label
presets keep ``nms.multiclass: true``)."""
from __future__ import annotations

from types import SimpleNamespace

import numpy as np
import torch

from losa.head.assign import assign_labels
from losa.post.nms import soft_nms
from stages.data.dataset import StoreDataset, truncate_window


class Reader:
    def __init__(self, n):
        self.n = n

    def videos(self):
        return ["v"]

    def layers(self):
        return [4]

    def video_info(self, vid):
        return {"duration": self.n * 0.5}

    def times(self, vid):
        return 0.25 + 0.5 * np.arange(self.n)

    def read(self, vid, layers=None, t0=0, t1=None):
        return {4: np.zeros((self.n, 1, 2), np.float32)[t0:t1]}


def test_overlapping_segments_of_two_classes_reach_the_targets():
    # "stir" [2, 12] s and "pour" [7, 17] s overlap on [7, 12]; steps every 0.5 s from 0.25 s
    ann = SimpleNamespace(classes=["pour", "stir"], videos={"v": {
        "subset": "training", "duration": 30.0, "segments": [(2.0, 12.0, "stir"), (7.0, 17.0, "pour")]}})
    ds = StoreDataset(Reader(60), ann, "training", [4], max_seq_len=64, crop_ratio=None)
    item = ds[0]
    np.testing.assert_allclose(item["segments"].numpy(), [[3.5, 23.5], [13.5, 33.5]])
    assert item["labels"].tolist() == [1, 0]
    pts = torch.tensor([[float(t), 0.0, 1e4, 1.0] for t in range(60)])
    cls, reg = assign_labels(pts, item["segments"], item["labels"], 2, center_sample="none")
    assert cls[:, 0].sum() > 0 and cls[:, 1].sum() > 0          # both classes have positives
    pour = cls[:, 0] > 0
    np.testing.assert_allclose((pts[pour, 0] - reg[pour, 0]).numpy(), 13.5)   # pour regresses pour
    # a window cut through the overlap keeps both (clipped) actions
    st, ed, segs, labels = truncate_window(item["segments"].numpy(), item["labels"].numpy(), 60, 30,
                                           0.3, np.random.default_rng(0))
    assert set(labels.tolist()) <= {0, 1} and len(labels) >= 1


def test_per_class_nms_keeps_overlapping_actions_of_different_classes():
    segs = torch.tensor([[2.0, 12.0], [2.5, 12.0], [7.0, 17.0]])
    scores = torch.tensor([0.9, 0.8, 0.7])
    labels = torch.tensor([1, 0, 0])
    s, sc, lab = soft_nms(segs, scores, labels, sigma=0.5, multiclass=True, max_num=10)
    # per class nothing overlaps the class-1 detection; class 0's two (IoU 5/14.5) decay each other
    assert sc[0] == 0.9 and lab[0] == 1
    kept = {(int(l), round(float(x), 4)) for l, x in zip(lab, sc)}
    assert (0, 0.8) in kept
    iou = 5.0 / 14.5
    assert (0, round(0.7 * float(np.exp(-iou ** 2 / 0.5)), 4)) in kept
    _, sc_agn, _ = soft_nms(segs, scores, labels, sigma=0.5, multiclass=False, max_num=10)
    assert float(sorted(sc_agn.tolist())[-2]) < 0.8               # class-agnostic: decayed by class 1
