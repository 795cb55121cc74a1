"""Checks on loaded annotations that guard against silent mistakes.

* **Classes never appear silently.**  A class with no segment in the training subset (a typo'd
  label, a label seen only in the test subset of an ActivityNet JSON without a class list) would
  be trained with zero examples: `require_trained_classes` refuses it in one line unless
  ``allow_partial_classes`` (``--allow-partial-classes``).  The THUMOS-14 loader refuses a class
  file that exists for only some splits (``Pluse_val.txt`` next to ``Pulse_test.txt``) the same way.
* **Duplicate ground-truth segments** (same video, label, start and end within
  `DUPLICATE_TOLERANCE` seconds) are counted and warned about.  ``duplicates="keep"`` (the default)
  follows the official ActivityNet evaluator, which keeps them (each needs its own detection);
  ``"drop"`` follows ActionFormer's evaluator, which removes them.  The choice applies to training
  targets and to mAP alike (``--duplicates keep|drop``).
"""

from __future__ import annotations

import warnings
from collections import Counter
from dataclasses import replace
from typing import Any

from stages.errors import StageError

__all__ = ["DUPLICATE_POLICIES", "DUPLICATE_TOLERANCE", "PartialClassError", "apply_duplicate_policy",
           "find_duplicates", "require_trained_classes"]

DUPLICATE_POLICIES = ("keep", "drop")
#: Two segments of one video and label are duplicates when both ends agree within this (seconds).
DUPLICATE_TOLERANCE = 1e-3


class PartialClassError(StageError):
    """A class that has no examples where it needs them (training subset, some THUMOS split)."""


def find_duplicates(ann: Any) -> dict[str, list[int]]:
    """{video id: indices (into its sorted segments) of the segments that repeat an earlier one}."""
    out: dict[str, list[int]] = {}
    for vid, video in ann.videos.items():
        kept: list[tuple[float, float, str]] = []
        for j, (s, e, lab) in enumerate(video.segments):
            if any(lab == kl and abs(s - ks) <= DUPLICATE_TOLERANCE and abs(e - ke) <= DUPLICATE_TOLERANCE
                   for ks, ke, kl in kept):
                out.setdefault(vid, []).append(j)
            else:
                kept.append((s, e, lab))
    return out


def apply_duplicate_policy(ann: Any, policy: str = "keep") -> Any:
    """Warn with the number of duplicate segments; keep them ("keep", ActivityNet) or return a
    copy without them ("drop", ActionFormer)."""
    if policy not in DUPLICATE_POLICIES:
        raise StageError(f"unknown duplicates policy {policy!r}; choose from {', '.join(DUPLICATE_POLICIES)}")
    dups = find_duplicates(ann)
    if not dups:
        return ann
    total = sum(len(v) for v in dups.values())
    vid = sorted(dups)[0]
    s, e, lab = ann.videos[vid].segments[dups[vid][0]]
    action = ("kept (ActivityNet convention; --duplicates drop follows ActionFormer)" if policy == "keep"
              else "dropped (ActionFormer convention; --duplicates keep follows ActivityNet)")
    warnings.warn(f"{ann.source or 'annotations'}: {total} duplicate ground-truth segment(s) in "
                  f"{len(dups)} video(s) (e.g. video {vid} [{s}, {e}] {lab!r}); {action}", stacklevel=2)
    if policy == "keep":
        return ann
    videos = {}
    for v, video in ann.videos.items():
        drop = set(dups.get(v, ()))
        videos[v] = replace(video, segments=[seg for j, seg in enumerate(video.segments) if j not in drop])
    return replace(ann, videos=videos)


def require_trained_classes(ann: Any, subset: str, allow_partial_classes: bool = False) -> list[str]:
    """PartialClassError naming every class without a segment in `subset` (and where it does
    occur), unless `allow_partial_classes`; returns those classes."""
    in_subset = set(ann.videos_in(subset))
    counts: Counter[str] = Counter()
    seen: dict[str, set[str]] = {}
    for vid, video in ann.videos.items():
        for _s, _e, lab in video.segments:
            if vid in in_subset:
                counts[lab] += 1
            seen.setdefault(lab, set()).add(video.subset)
    empty = [c for c in ann.classes if counts[c] == 0]
    if empty and not allow_partial_classes:
        where = "; ".join(f"{c!r} seen only in: {', '.join(sorted(seen[c])) if c in seen else 'no subset'}"
                          for c in empty[:5])
        more = f" (and {len(empty) - 5} more)" if len(empty) > 5 else ""
        raise PartialClassError(
            f"{ann.source or 'annotations'}: {len(empty)} class(es) have no segment in training subset "
            f"{subset!r}: {where}{more}; fix the label or class list, or pass --allow-partial-classes")
    return empty
