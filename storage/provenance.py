"""What identifies an activation store: its format tag and version, and its provenance.

The root attrs of every store hold ``format``/``format_version`` (`check_root_attrs` refuses
anything else) and the provenance of the extraction (`check_provenance` compares a recorded and a
requested provenance after a JSON round trip, naming every differing key; ``package_version`` is
ignored), so a store is never silently extended with activations of other settings.
"""

from __future__ import annotations

import json
from collections.abc import Mapping
from pathlib import Path
from typing import Any

from storage.errors import NotAStoreError, ProvenanceMismatch, StoreError

__all__ = ["FORMAT", "FORMAT_VERSION", "check_provenance", "check_root_attrs"]

FORMAT = "losa-activations"
FORMAT_VERSION = 1
_IGNORED_PROVENANCE_KEYS = frozenset({"package_version"})


def check_provenance(existing: Mapping[str, Any], new: Mapping[str, Any]) -> None:
    """Raise ProvenanceMismatch naming every differing top-level key with both values.

    Values are compared after a JSON round trip (so tuples equal lists); the key
    ``package_version`` is ignored.
    """
    old = _jsonable(dict(existing), "existing provenance")
    cur = _jsonable(dict(new), "new provenance")
    missing = object()
    diffs = []
    for key in sorted(set(old) | set(cur)):
        if key in _IGNORED_PROVENANCE_KEYS:
            continue
        a, b = old.get(key, missing), cur.get(key, missing)
        if a != b:
            fa = "<absent>" if a is missing else json.dumps(a, sort_keys=True)
            fb = "<absent>" if b is missing else json.dumps(b, sort_keys=True)
            diffs.append(f"{key}: store has {fa}, requested {fb}")
    if diffs:
        raise ProvenanceMismatch(
            "store was written with a different provenance (use a new store path): " + "; ".join(diffs)
        )


def _jsonable(value: Any, what: str) -> Any:
    """JSON round trip of `value`; ValueError naming `what` if it is not JSON-serialisable."""
    try:
        return json.loads(json.dumps(value, allow_nan=False))
    except (TypeError, ValueError) as exc:
        raise StoreError(f"{what} is not JSON-serialisable: {exc}") from exc


def check_root_attrs(attrs: Mapping[str, Any], path: str | Path) -> None:
    """NotAStoreError unless `attrs` are the root attrs of a supported LoSA activation store."""
    if attrs.get("format") != FORMAT:
        raise NotAStoreError(f"not a LoSA activation store (no format={FORMAT!r}): {path}")
    version = attrs.get("format_version")
    if version != FORMAT_VERSION:
        raise NotAStoreError(
            f"unsupported store format_version {version!r} (this code reads {FORMAT_VERSION}): {path}"
        )
