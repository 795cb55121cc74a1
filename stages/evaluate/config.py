"""Evaluation settings (`EvalSettings`): which ground truth, which tIoUs, which videos.

Knob-schema class (`losa.schema`), torch-free: ``losa-eval`` builds its options from it and
params.yaml's ``evaluate`` section holds the same keys.  The choice lists are those of the modules
that implement them (tIoU presets: `losa.metrics.detection.TIOU_PRESETS`; exclusion policies:
`stages.data.annotations.THUMOS_POLICIES`; formats: `stages.data.annotations.load_annotations`);
tests/pipeline/test_knobs.py checks they agree.
"""
from __future__ import annotations

from typing import Literal, get_args

from losa.schema import knob, settings
from stages.errors import StageError

__all__ = ["ANNOTATION_FORMATS", "EvalSettings", "parse_pairs"]


def parse_pairs(text: str | None) -> list[tuple[str, str]]:
    """``"a+b,c+d"`` → ``[("a", "b"), ("c", "d")]``; empty → ``[]``."""
    out = []
    for item in (text or "").split(","):
        if not item.strip():
            continue
        names = [n.strip() for n in item.split("+")]
        if len(names) != 2 or not all(names) or names[0] == names[1]:
            raise StageError(f"evaluate setting pairs: {item.strip()!r} is not two different classes joined by '+'")
        out.append((names[0], names[1]))
    return out


@settings(what="evaluate", error=StageError)
class EvalSettings:
    """How detections are scored against the ground truth."""

    subset: str | None = knob(None, "Subset to evaluate (e.g. testing, validation, test); required when the "
                                    "annotations have several.")
    tious: str | None = knob(None, "tIoU thresholds: start:step:stop or a comma list (default: the anet preset).")
    preset: Literal["anet", "thumos14"] | None = knob(
        None, "Named tIoUs: thumos14 = 0.3:0.1:0.7, anet = 0.5:0.05:0.95 (the default).")
    exclude_policy: Literal["none", "actionformer", "opentad"] = knob(
        "none", "THUMOS-14 videos to leave out: actionformer (212 test videos) or opentad (211).")
    fmt: Literal["auto", "activitynet", "thumos", "csv", "epic", "ego4d"] = knob(
        "auto", "Annotation format (epic: EPIC-Kitchens-100 CSV, verb classes; ego4d: Ego4D MQ JSON).",
        flag="format")
    strict: bool = knob(False, "Refuse results holding videos absent from the ground truth (default: score their "
                               "detections as false positives, as the official evaluator, and warn).")
    allow_partial_classes: bool = knob(False, "Accept THUMOS class files that exist for some splits only (refused "
                                              "by default as a likely typo, e.g. Pluse_val.txt).")
    duplicates: Literal["keep", "drop"] = knob(
        "keep", "Duplicate ground-truth segments: keep (ActivityNet evaluator) or drop (ActionFormer "
                "evaluator); a warning gives their count either way.")
    pairs: str = knob("", "Class pairs one cue alone separates, 'a+b,c+d': eval.json gains each pair's "
                          "accuracy (losa.metrics.pairs; chance 0.5).")
    holdout: bool = knob(False, "With a run: score it on the held-out part of its training subset "
                                "(train.holdout) instead of the subset; for choosing layers / variants.")

    def __post_init__(self) -> None:
        parse_pairs(self.pairs)
        if self.tious is not None and self.preset is not None:
            raise StageError("evaluate settings tious and preset are mutually exclusive")


ANNOTATION_FORMATS: tuple[str, ...] = get_args(EvalSettings.__pydantic_fields__["fmt"].annotation)
