"""Named per-video feature arrays stored next to the ``layer_XX`` arrays.

A store may hold, per video, clip features that are not a tapped block's token cells: the
reference feature of VideoMAEv2's TAD extractor (``fc_norm``, ``fc_norm(mean of all last-block
tokens)``) is one.  Each is an array ``feature_<name>`` of shape ``[T, C]``, always float32 (the
reference recipe computes and releases float32), chunked along time like the layers and written and
published with them; how it was made is in the store's provenance (``reference_feature``).
"""

from __future__ import annotations

import re

__all__ = ["FEATURE_DTYPE", "cell_mean_feature", "check_feature_name", "feature_array_name", "parse_feature_name"]

#: Store dtype of every feature array.
FEATURE_DTYPE = "float32"
_PREFIX = "feature_"
_NAME_RE = re.compile(r"^[a-z][a-z0-9_]{0,63}$")


def check_feature_name(name: object) -> str:
    """`name` if it is a valid feature name (lower-case letter, then letters, digits, ``_``)."""
    if not isinstance(name, str) or not _NAME_RE.match(name):
        raise ValueError(f"feature name must be lower-case letters, digits and '_' (starting with a "
                         f"letter), got {name!r}")
    return name


def cell_mean_feature(layer: int) -> str:
    """Name of the stored cell mean of a layer: ``cellmean_40`` = mean over the cells of
    ``layer_40`` as stored (float16 / bfloat16 values averaged in float32), ``[T, C]``; written by
    extraction for the last layer when a step has more than one cell, so that a model that only
    averages that layer's cells (head-only, the fusion base) reads 1/cells of the data."""
    return f"cellmean_{int(layer):02d}"


def feature_array_name(name: str) -> str:
    """Array name of a feature: ``feature_array_name("fc_norm") == "feature_fc_norm"``."""
    return _PREFIX + check_feature_name(name)


def parse_feature_name(array_name: str) -> str | None:
    """Feature name of a ``feature_<name>`` array, or None for any other array."""
    if not array_name.startswith(_PREFIX):
        return None
    name = array_name[len(_PREFIX):]
    return name if _NAME_RE.match(name) else None
