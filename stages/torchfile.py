"""Read a torch file a user handed us (checkpoint.pt, model.pt, backbone .pth) safely.

Always ``weights_only=True`` (no pickled code runs).  A truncated, garbage or foreign file becomes
one `StageError` line naming the file and what it should have been, never a traceback.
"""

from __future__ import annotations

import os
from pathlib import Path
from typing import Any

from stages.errors import StageError

__all__ = ["UnreadableFileError", "load_torch_file"]


class UnreadableFileError(StageError):
    """A torch file that cannot be read (truncated, not a torch file, foreign pickled objects)."""


def load_torch_file(path: str | os.PathLike, what: str, expect_format: str | None = None) -> Any:
    """``torch.load(path, weights_only=True)`` on CPU; `what` names the file's role in messages
    ("training checkpoint", "trained model").  With `expect_format`, the loaded dict must carry
    ``{"format": expect_format}``."""
    import torch

    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(f"{what} not found: {path}")
    try:
        state = torch.load(path, map_location="cpu", weights_only=True)
    except Exception as exc:  # truncated zip, garbage bytes, pickled objects, ...
        reason = " ".join(str(exc).split())[:160] or type(exc).__name__
        raise UnreadableFileError(
            f"cannot read {what} {path} ({path.stat().st_size} bytes): truncated or not a torch file "
            f"({reason})") from None
    if expect_format is not None and (not isinstance(state, dict) or state.get("format") != expect_format):
        raise UnreadableFileError(f"{path} is not a {what} (no format={expect_format!r} inside)")
    return state
