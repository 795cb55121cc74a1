"""Activation stores (numpy + zarr/h5py only; never imports torch or losa). See DESIGN.md §2.

Write with ``ZarrActivationStore.create_or_open(path, provenance)`` + ``claim``/``begin_video``
(or ``write_video``); read any store with ``open_store(path)``; copy to one HDF5 file with
``convert_store``; export ActionFormer-style ``.npy`` files with ``export_npy``.
"""

from __future__ import annotations

from storage.export import export_npy
from storage.hdf5_store import HDF5Reader, convert_store
from storage.keys import layer_name, parse_layer_name, safe_key, unsafe_key
from storage.reader import (
    FORMAT,
    FORMAT_VERSION,
    STORE_DTYPES,
    ActivationReader,
    NotAStoreError,
    ProvenanceMismatch,
    StoreError,
    StoreNotWritable,
    UnknownFeatureError,
    UnknownLayerError,
    UnknownVideoError,
    check_provenance,
    decode_rows,
    encode_rows,
    open_store,
)
from storage.zarr_store import VideoWriter, ZarrActivationStore, ZarrReader, write_video

__all__ = [
    "FORMAT",
    "FORMAT_VERSION",
    "STORE_DTYPES",
    "ActivationReader",
    "HDF5Reader",
    "NotAStoreError",
    "ProvenanceMismatch",
    "StoreError",
    "StoreNotWritable",
    "UnknownFeatureError",
    "UnknownLayerError",
    "UnknownVideoError",
    "VideoWriter",
    "ZarrActivationStore",
    "ZarrReader",
    "check_provenance",
    "convert_store",
    "decode_rows",
    "encode_rows",
    "export_npy",
    "layer_name",
    "open_store",
    "parse_layer_name",
    "safe_key",
    "unsafe_key",
    "write_video",
]
