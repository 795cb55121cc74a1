"""The user-facing errors of the activation stores, all subclasses of `StoreError` (ValueError).

Every backend and every caller (the CLIs map them to one-line messages and exit codes) uses these
classes: not a store, unknown video / layer / feature, provenance mismatch, store not writable.
"""

from __future__ import annotations

__all__ = [
    "StoreError",
    "NotAStoreError",
    "UnknownVideoError",
    "UnknownLayerError",
    "UnknownFeatureError",
    "ProvenanceMismatch",
    "StoreNotWritable",
]


class StoreError(ValueError):
    """Base class of user-facing activation-store errors."""


class NotAStoreError(StoreError):
    """The path exists but is not a LoSA activation store (or has an unsupported version)."""


class UnknownVideoError(StoreError):
    """A requested video is not (completely) in the store."""


class UnknownLayerError(StoreError):
    """A requested layer was not stored for a video."""


class UnknownFeatureError(StoreError):
    """A requested named feature (e.g. ``fc_norm``) was not stored for a video."""


class ProvenanceMismatch(StoreError):
    """A store was opened for writing with a provenance that differs from the recorded one."""


class StoreNotWritable(StoreError):
    """The store cannot be written: read-only file system or folder, disk full, permission."""
