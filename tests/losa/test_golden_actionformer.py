"""Parity with ActionFormer's own code (fixtures from tests/golden/make_actionformer.py).

Focal loss, 1-D DIoU, label assignment with centre sampling and Soft-NMS with / without segment
voting must equal the official functions on the same inputs within fp32 tolerance.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
import torch

from losa.head.assign import assign_labels
from losa.head.losses import diou_loss_1d, sigmoid_focal_loss
from losa.post.nms import soft_nms

G = dict(np.load(Path(__file__).parents[1] / "golden" / "actionformer.npz"))


def _t(key: str) -> torch.Tensor:
    return torch.from_numpy(G[key])


def test_focal_loss_and_diou() -> None:
    got = sigmoid_focal_loss(_t("focal_logits"), _t("focal_targets"), reduction="none")
    torch.testing.assert_close(got, _t("focal_loss"), rtol=1e-5, atol=1e-6)
    got = diou_loss_1d(_t("diou_pred"), _t("diou_target"), reduction="none")
    torch.testing.assert_close(got, _t("diou_loss"), rtol=1e-5, atol=1e-6)


def test_label_assignment_with_centre_sampling() -> None:
    cls_t, reg_t = assign_labels(_t("assign_points"), _t("assign_segments"), _t("assign_labels"),
                                 num_classes=G["assign_cls"].shape[1], center_sample="radius",
                                 center_radius=1.5)
    torch.testing.assert_close(cls_t, _t("assign_cls"), rtol=0, atol=0)
    pos = _t("assign_cls").sum(-1) > 0
    assert pos.sum() > 10
    torch.testing.assert_close(reg_t[pos], _t("assign_reg")[pos], rtol=0, atol=1e-6)


@pytest.mark.parametrize("name, multiclass, voting", [("multiclass", True, 0.0),
                                                      ("agnostic_voting", False, 0.7)])
@pytest.mark.parametrize("algorithm", ["rounds", "greedy"])
def test_soft_nms_with_and_without_voting(name: str, multiclass: bool, voting: float,
                                          algorithm: str) -> None:
    segs, scores, labels = soft_nms(_t("nms_segs"), _t("nms_scores"), _t("nms_labels"),
                                    iou_threshold=0.1, sigma=0.5, min_score=1e-3, max_num=200,
                                    multiclass=multiclass, voting_thresh=voting, algorithm=algorithm)
    want_scores = _t(f"nms_{name}_scores")
    assert scores.shape == want_scores.shape
    torch.testing.assert_close(scores, want_scores, rtol=0, atol=2e-6)
    torch.testing.assert_close(segs, _t(f"nms_{name}_segs"), rtol=1e-5, atol=2e-4)
    assert torch.equal(labels, _t(f"nms_{name}_labels").long())
