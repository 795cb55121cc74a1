"""Activation stores (numpy + zarr/h5py only; never imports torch or losa). See DESIGN.md §2.

Write with ``ZarrActivationStore.create_or_open(path, provenance)`` + ``claim``/``begin_video``
(or ``write_video``); read any store with ``open_store(path)``; copy to one HDF5 file with
``convert_store``; export ActionFormer-style ``.npy`` files with ``export_npy``.
"""

from __future__ import annotations

import importlib

# Names are imported on first use (PEP 562), so that importing one light module of the package
# (e.g. ``storage.errors`` for the CLIs' error handling, or ``--help``) does not load zarr and h5py.
_HOME = {
    "export_npy": "storage.export",
    "HDF5Reader": "storage.hdf5_store", "convert_store": "storage.hdf5_store",
    "layer_name": "storage.keys", "parse_layer_name": "storage.keys", "safe_key": "storage.keys",
    "unsafe_key": "storage.keys",
    "FORMAT": "storage.provenance", "FORMAT_VERSION": "storage.provenance",
    "check_provenance": "storage.provenance",
    "STORE_DTYPES": "storage.codecs", "decode_rows": "storage.codecs", "encode_rows": "storage.codecs",
    "ActivationReader": "storage.reader", "open_store": "storage.reader",
    "NotAStoreError": "storage.errors", "ProvenanceMismatch": "storage.errors", "StoreError": "storage.errors",
    "StoreNotWritable": "storage.errors", "UnknownFeatureError": "storage.errors",
    "UnknownLayerError": "storage.errors", "UnknownVideoError": "storage.errors",
    "VideoWriter": "storage.zarr_writer", "write_video": "storage.zarr_writer",
    "ZarrActivationStore": "storage.zarr_store", "ZarrReader": "storage.zarr_reader",
}


def __getattr__(name: str):
    home = _HOME.get(name)
    if home is None:
        raise AttributeError(f"module 'storage' has no attribute {name!r}")
    value = getattr(importlib.import_module(home), name)
    globals()[name] = value
    return value


def __dir__() -> list[str]:
    return sorted(set(globals()) | set(_HOME))


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
