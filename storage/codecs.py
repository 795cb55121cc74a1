"""Store dtype codecs: float rows ↔ the stored representation of each store dtype.

`STORE_DTYPES` maps a store dtype name to the numpy dtype of its arrays (bfloat16 is kept as raw
uint16 bits, since numpy has no bfloat16); `encode_rows` rounds float rows to it (round to nearest
even for bfloat16, an error instead of inf on float16 overflow) and `decode_rows` widens stored
rows back to float32 exactly.  Shared by the writers and the readers of every backend.
"""

from __future__ import annotations

import numpy as np

from storage.errors import StoreError

__all__ = ["STORE_DTYPES", "encode_rows", "decode_rows"]

#: store dtype name -> numpy dtype of the stored array (bfloat16 is kept as its raw uint16 bits)
STORE_DTYPES: dict[str, np.dtype] = {
    "float16": np.dtype("float16"),
    "bfloat16": np.dtype("uint16"),
    "float32": np.dtype("float32"),
}


def encode_rows(values: np.ndarray, dtype: str, what: str) -> np.ndarray:
    """Convert float rows to the stored representation of store dtype `dtype`.

    For "bfloat16" a float array is rounded to nearest-even; a uint16 array is taken as raw bfloat16
    bits (e.g. ``t.bfloat16().view(torch.int16).numpy().view(np.uint16)``). For "float16", finite
    values beyond the float16 range raise a StoreError naming `what` instead of silently becoming inf.
    """
    if dtype not in STORE_DTYPES:
        raise StoreError(f"unknown store dtype {dtype!r}; expected one of {sorted(STORE_DTYPES)}")
    arr = np.asarray(values)
    if dtype == "bfloat16":
        if arr.dtype == np.uint16:
            return arr
        if arr.dtype.kind != "f":
            raise StoreError(f"{what}: expected float rows, got dtype {arr.dtype}")
        f32 = np.ascontiguousarray(arr, dtype=np.float32)
        bits = f32.view(np.uint32)
        rounded = (bits + (((bits >> 16) & 1) + np.uint32(0x7FFF))) >> 16
        out = rounded.astype(np.uint16)
        nan = np.isnan(f32)
        if nan.any():
            out[nan] = 0x7FC0
        return out
    if arr.dtype.kind != "f":
        raise StoreError(f"{what}: expected float rows, got dtype {arr.dtype}")
    with np.errstate(over="ignore"):
        out = arr.astype(STORE_DTYPES[dtype], copy=False)
    if dtype == "float16" and arr.dtype != np.float16:
        overflow = np.isinf(out) & np.isfinite(arr)
        if overflow.any():
            peak = float(np.abs(arr[np.isfinite(arr)]).max())
            raise StoreError(
                f"{what}: values up to {peak:.4g} overflow float16 (max 65504); "
                "use store dtype 'bfloat16'"
            )
    return out


def decode_rows(stored: np.ndarray, dtype: str) -> np.ndarray:
    """Stored array → float32 (bfloat16 bits are widened exactly)."""
    if dtype == "bfloat16":
        return (np.asarray(stored, dtype=np.uint16).astype(np.uint32) << 16).view(np.float32)
    return np.asarray(stored, dtype=np.float32)
