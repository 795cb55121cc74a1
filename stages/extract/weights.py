"""Read a `--checkpoint` file, saying in one line what a file is when it is not a PyTorch checkpoint.

`torch.load` reports a text file as ``KeyError: 101``, an empty file as an ``EOFError`` without a
message and a pickle of NumPy arrays as a long note about ``weights_only``. `load_checkpoint` names
the file and what it is instead (empty, text or HTML, NumPy ``.npy``/``.npz``, a pickle of NumPy
objects, a truncated archive) and never unpickles arbitrary objects (``weights_only=True``).
"""

from __future__ import annotations

import os
import warnings
import zipfile
from collections.abc import Mapping
from pathlib import Path
from typing import Any

from stages.errors import StageError

__all__ = ["CheckpointFileError", "describe_file", "load_checkpoint"]

_SNIFF_BYTES = 1 << 16


class CheckpointFileError(StageError):
    """The checkpoint file cannot be read as a PyTorch state dict (one line, names the file)."""


def describe_file(path: str | os.PathLike) -> str | None:
    """What `path` is when it is recognisably not a PyTorch checkpoint, else None."""
    p = Path(path)
    size = p.stat().st_size
    if size == 0:
        return "an empty file (0 bytes)"
    with open(p, "rb") as fh:
        head = fh.read(_SNIFF_BYTES)
    if head.startswith(b"\x93NUMPY"):
        return "a NumPy .npy array file"
    if zipfile.is_zipfile(p):
        try:
            with zipfile.ZipFile(p) as zf:
                names = zf.namelist()
        except zipfile.BadZipFile:
            names = []
        if names and all(n.endswith(".npy") for n in names):
            return f"a NumPy .npz archive ({len(names)} array{'s' if len(names) != 1 else ''})"
        if not any(n.endswith("data.pkl") for n in names):
            return f"a zip archive without a PyTorch state dict ({len(names)} entries)"
        return None
    if head[:1] == b"\x80" and (b"numpy" in head):
        return "a pickle of NumPy objects (load it and save the tensors with torch.save)"
    if b"\x00" not in head:
        try:
            text = head.decode("utf-8")
        except UnicodeDecodeError:
            text = None
        if text is not None:
            first = text.strip().splitlines()[0] if text.strip() else ""
            kind = "an HTML page (a failed download?)" if first.lstrip().lower().startswith(("<!doctype", "<html")) \
                else "a text file"
            shown = first[:40] + ("..." if len(first) > 40 else "")
            return f"{kind} ({size} bytes, starts {shown!r})"
    return None


def load_checkpoint(path: str | os.PathLike) -> Mapping[str, Any]:
    """`torch.load(path, weights_only=True)` on the CPU; `CheckpointFileError` in one line otherwise."""
    import torch

    p = Path(path)
    if not p.is_file():
        raise FileNotFoundError(f"checkpoint not found: {p}")
    what = describe_file(p)
    if what is not None and what.startswith("an empty file"):
        raise CheckpointFileError(f"checkpoint {p} is {what}, not a PyTorch checkpoint")
    try:
        with warnings.catch_warnings():  # a pickle protocol note would precede the one-line error
            warnings.filterwarnings("ignore", message="Detected pickle protocol")
            state = torch.load(p, map_location="cpu", weights_only=True)
    except Exception as exc:  # torch's messages for non-checkpoints are cryptic: say what it is
        if what is not None:
            raise CheckpointFileError(f"checkpoint {p} is {what}, not a PyTorch checkpoint") from None
        reason = " ".join(str(exc).split())[:160] or "no details"
        raise CheckpointFileError(
            f"checkpoint {p} is not a readable PyTorch checkpoint (truncated or corrupt? "
            f"{type(exc).__name__}: {reason})"
        ) from None
    if not isinstance(state, Mapping):
        raise CheckpointFileError(
            f"checkpoint {p} holds a {type(state).__name__}, not a state dict (a mapping of tensors)"
        )
    return state
