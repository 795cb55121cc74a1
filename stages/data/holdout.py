"""A seeded held-out part of the training videos, for choices (layers, variants) made before test.

`split_holdout(videos, fraction, seed)` is a pure function of the sorted video ids, the fraction and
the seed, so training (which leaves the held-out videos out), the probes (which fit on the rest and
score on them) and evaluation (which scores a run on them) recompute the same split independently.
Report the test subset once, for the variant chosen on the held-out part.
"""

from __future__ import annotations

from collections.abc import Iterable

import numpy as np

from stages.errors import StageError

__all__ = ["split_holdout", "holdout_of"]


def split_holdout(videos: Iterable[str], fraction: float, seed: int = 0) -> tuple[list[str], list[str]]:
    """``(fit, held_out)`` sorted id lists: ``round(fraction · n)`` videos (at least 1, at most n-1)
    drawn with ``numpy.random.default_rng(seed)`` from the sorted ids; ``fraction == 0``: no split."""
    ids = sorted(set(videos))
    if not 0.0 <= fraction < 1.0:
        raise StageError(f"holdout must be in [0, 1), got {fraction}")
    if fraction == 0.0:
        return ids, []
    if len(ids) < 2:
        raise StageError(f"holdout {fraction} needs at least 2 training videos, got {len(ids)}")
    k = min(len(ids) - 1, max(1, int(round(fraction * len(ids)))))
    pick = np.random.default_rng(seed).permutation(len(ids))[:k]
    held = sorted(ids[i] for i in pick)
    taken = set(held)
    return [v for v in ids if v not in taken], held


def holdout_of(annotations, subset: str, fraction: float, seed: int = 0) -> tuple[list[str], list[str]]:
    """`split_holdout` of the videos of ``subset`` in ``annotations`` (what training splits)."""
    return split_holdout(annotations.videos_in(subset), fraction, seed)
