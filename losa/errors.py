"""Base class of the user-facing errors raised by the model package (`losa`).

A `LosaError` carries a one-line message meant for the user (a bad setting, an unusable
checkpoint); the command-line glue (`pipeline/errors.py`) prints it without a traceback.  Plain
`ValueError`s raised by `losa` code are programming errors (wrong tensor shapes, ...) and keep their
traceback.  `LosaError` subclasses `ValueError` so existing ``except ValueError`` callers still work.
"""

from __future__ import annotations

__all__ = ["LosaError"]


class LosaError(ValueError):
    """A user-caused failure inside `losa` (one line naming the setting or file)."""
