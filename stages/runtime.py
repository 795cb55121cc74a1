"""Runtime policy shared by every stage that runs a model: device, mixed precision, autocast.

One home for what training, inference, detection and the benchmarks all need, so no stage imports
another stage for it.
"""
from __future__ import annotations

from typing import Any

import torch
from stages.errors import StageError

__all__ = ["amp_dtype", "autocast_context", "resolve_device"]


def resolve_device(device: str | torch.device = "auto") -> torch.device:
    """"auto" → CUDA when available, else CPU; anything else as given (ValueError if unknown)."""
    if isinstance(device, torch.device):
        return device
    if device == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    try:
        dev = torch.device(device)
    except RuntimeError:
        raise StageError(f"unknown device {device!r} (use auto, cpu, cuda or cuda:N)") from None
    if dev.type == "cuda" and not torch.cuda.is_available():
        raise StageError(f"device {device!r} requested but CUDA is not available")
    return dev


def amp_dtype(amp: str, device: torch.device) -> torch.dtype | None:
    """Autocast dtype of an ``amp`` setting: auto = bf16 on CUDA / none elsewhere, off = none."""
    if amp == "off" or (amp == "auto" and device.type != "cuda"):
        return None
    return torch.float16 if amp == "fp16" else torch.bfloat16


def autocast_context(device: torch.device, dtype: torch.dtype | None) -> Any:
    """Autocast to ``dtype`` on ``device`` (a no-op context when ``dtype`` is None)."""
    return torch.autocast(device.type, dtype=dtype or torch.float32, enabled=dtype is not None)
