"""Where a trained run meets a store: the features must come from the same recipe.

A run records the provenance of the store it was trained on (``run.json`` / ``model.pt`` /
``checkpoint.pt``: ``store_provenance``).  Resuming the training, evaluating the run on a store
(`losa-eval --run R --store S`) or predicting with it on any store compares that record with the
store's own provenance — backbone, weights, layers, sampling, resolution, resize, normalisation,
pooling, dtype, precision, ... (everything but ``package_version``) — and refuses with one line
naming every differing key, instead of silently mixing features of different recipes.
"""

from __future__ import annotations

import json
from collections.abc import Mapping
from typing import Any

from stages.errors import ProvenanceConflict

__all__ = ["IGNORED_KEYS", "provenance_diffs", "require_same_provenance"]

#: Keys that may differ between a run's record and a store (not part of the feature recipe).
IGNORED_KEYS = frozenset({"package_version"})


def _show(value: Any) -> str:
    text = json.dumps(value, sort_keys=True, default=str)
    return text if len(text) <= 80 else text[:77] + "..."


def provenance_diffs(recorded: Mapping[str, Any], actual: Mapping[str, Any]) -> list[str]:
    """``["key: run has A, store has B", ...]`` for every differing top-level key (sorted)."""
    old = json.loads(json.dumps(dict(recorded or {}), default=str))
    new = json.loads(json.dumps(dict(actual or {}), default=str))
    out = []
    for key in sorted(set(old) | set(new)):
        if key in IGNORED_KEYS or old.get(key, KeyError) == new.get(key, KeyError):
            continue
        a = "<absent>" if key not in old else _show(old[key])
        b = "<absent>" if key not in new else _show(new[key])
        out.append(f"{key}: run has {a}, store has {b}")
    return out


def require_same_provenance(recorded: Mapping[str, Any] | None, actual: Mapping[str, Any], *,
                            what: str, store: Any) -> None:
    """ProvenanceConflict unless the store's provenance `actual` equals the run's record
    `recorded` (None: the run predates the record, nothing to compare)."""
    if recorded is None:
        return
    diffs = provenance_diffs(recorded, actual)
    if diffs:
        raise ProvenanceConflict(
            f"{what} was trained on features of another recipe than store {store} "
            f"({len(diffs)} differing key(s)): " + "; ".join(diffs)
        )
