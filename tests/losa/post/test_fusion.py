"""Score fusion of class-agnostic segments with video-level class scores (hand-worked cases)."""

import numpy as np
import pytest

from losa.post.fusion import combine, fuse_video, top_classes

SEG = np.array([0.81, 0.25])
CLS = np.array([0.10, 0.64, 0.36])


def test_top2_sqrt_hand_worked():
    # top-2 classes: 1 (0.64) and 2 (0.36); sqrt(0.64*0.81)=0.72, sqrt(0.36*0.81)=0.54,
    # sqrt(0.64*0.25)=0.40, sqrt(0.36*0.25)=0.30
    seg_i, cls_i, score = fuse_video(SEG, CLS, topk=2, formula="sqrt")
    assert seg_i.tolist() == [0, 0, 1, 1]
    assert cls_i.tolist() == [1, 2, 1, 2]
    np.testing.assert_allclose(score, [0.72, 0.54, 0.40, 0.30])


def test_product_and_segment_formulas():
    _, cls_i, score = fuse_video(SEG, CLS, topk=2, formula="product")
    np.testing.assert_allclose(score, [0.5184, 0.2916, 0.16, 0.09])
    assert cls_i.tolist() == [1, 2, 1, 2]
    seg_i, cls_i, score = fuse_video(SEG, CLS, topk=3, formula="segment")
    # equal fused scores keep the class order (best class first)
    assert cls_i.tolist() == [1, 2, 0, 1, 2, 0] and seg_i.tolist() == [0, 0, 0, 1, 1, 1]
    np.testing.assert_allclose(score, [0.81] * 3 + [0.25] * 3)


def test_topk_one_and_more_than_classes():
    seg_i, cls_i, score = fuse_video(SEG, CLS, topk=1)
    assert cls_i.tolist() == [1, 1] and seg_i.tolist() == [0, 1]
    _, cls_i, _ = fuse_video(SEG, CLS, topk=10)
    assert sorted(set(cls_i.tolist())) == [0, 1, 2] and len(cls_i) == 6


def test_max_segments_keeps_the_best_segments():
    seg_i, _, _ = fuse_video(np.array([0.1, 0.9, 0.5]), CLS, topk=2, max_segments=2)
    assert sorted(set(seg_i.tolist())) == [1, 2]


def test_softmax_and_ties():
    idx, sc = top_classes(np.array([0.0, np.log(3.0), 0.0]), 2, softmax=True)
    assert idx.tolist() == [1, 0]            # tie between 0 and 2 → lower index first
    np.testing.assert_allclose(sc, [0.6, 0.2])


def test_errors():
    with pytest.raises(ValueError, match="non-negative"):
        combine(np.array([-1.0]), np.array([0.5]), "sqrt")
    with pytest.raises(ValueError, match="unknown fusion formula"):
        combine(0.5, 0.5, "mean")
    with pytest.raises(ValueError, match="topk"):
        top_classes(CLS, 0)
