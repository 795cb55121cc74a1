"""Label assignment with overlapping actions of different classes (multi-label datasets)."""
import torch

from losa.head.assign import assign_labels


def _points(n=40, stride=1.0, lo=0.0, hi=1e4):
    return torch.tensor([[float(t), lo, hi, stride] for t in range(n)])


def test_equal_length_overlap_of_two_classes_regresses_its_own_class():
    # A = [5, 25] class 0 and B = [15, 35] class 1: same length, overlapping on (15, 25)
    pts = _points()
    segs = torch.tensor([[5.0, 25.0], [15.0, 35.0]])
    cls, reg = assign_labels(pts, segs, torch.tensor([0, 1]), 2, center_sample="none")
    for t in range(40):
        row = cls[t].tolist()
        if 15 < t < 25:                  # inside both: one segment (A, the first) is regressed ...
            assert row == [1.0, 0.0], t  # ... so only its class is a positive (ActionFormer: both)
            assert reg[t].tolist() == [t - 5.0, 25.0 - t]
        elif 5 < t < 25:
            assert row == [1.0, 0.0] and reg[t].tolist() == [t - 5.0, 25.0 - t]
        elif 15 < t < 35:
            assert row == [0.0, 1.0] and reg[t].tolist() == [t - 15.0, 35.0 - t]
        else:
            assert row == [0.0, 0.0]
    assert cls[:, 0].sum() > 0 and cls[:, 1].sum() > 0   # both classes keep positives


def test_one_span_with_two_labels_sets_both_classes():
    pts = _points()
    segs = torch.tensor([[5.0, 25.0], [5.0, 25.0005], [8.0, 12.0]])
    cls, reg = assign_labels(pts, segs, torch.tensor([0, 1, 0]), 3, center_sample="none")
    assert cls[20].tolist() == [1.0, 1.0, 0.0] and reg[20].tolist() == [15.0, 5.0]
    assert cls[10].tolist() == [1.0, 0.0, 0.0] and reg[10].tolist() == [2.0, 2.0]   # shortest wins


def test_nested_actions_of_two_classes_split_over_pyramid_levels():
    # a long action of class 0 containing a short one of class 1: the short one is regressed at the
    # fine level, the long one at the coarse level (regression ranges), so both are learned
    fine = _points(64, 1.0, 0.0, 8.0)
    coarse = torch.tensor([[float(t), 8.0, 1e4, 4.0] for t in range(0, 64, 4)])
    pts = torch.cat([fine, coarse])
    segs = torch.tensor([[4.0, 60.0], [30.0, 36.0]])
    cls, _ = assign_labels(pts, segs, torch.tensor([0, 1]), 2, center_sample="radius")
    fine_pos, coarse_pos = cls[:64], cls[64:]
    assert fine_pos[:, 1].sum() > 0 and fine_pos[:, 0].sum() == 0
    assert coarse_pos[:, 0].sum() > 0
