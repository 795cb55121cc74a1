"""Shared data of the activation-store tests: hostile video ids, a provenance, deterministic rows.

Not a test module: `tests/storage/test_*.py` import it (``tests.storage.store_data``) and
`tests/storage/conftest.py` builds the ``store`` fixture from `PROV`.
"""

from __future__ import annotations

import zlib

import numpy as np

HOSTILE = ["../x", "a/b", "..", ".", ".hidden", "_tmp", "_locks", "ünï cödé 日本", "with space",
           "~7e", "~", "%2F", "a\\b", "tab\there", "new\nline", "e\u0301", "/abs/path", "-", "CAPS"]
PROV = {"preset": "tiny", "layers": [2, 4], "norm": "imagenet", "package_version": "0.1.0"}


def arrays_for(video_id: str, steps: int, layers=(2, 4), cells: int = 4, channels: int = 8) -> dict:
    rng = np.random.default_rng(zlib.crc32(video_id.encode("utf-8", "surrogatepass")))
    return {layer: rng.standard_normal((steps, cells, channels)).astype(np.float32) * 3 for layer in layers}


def times_for(steps: int) -> np.ndarray:
    return (np.arange(steps) * 4 + 8) / 30.0
