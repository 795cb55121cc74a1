"""Fixtures of the activation-store tests: ``store``, a fresh Zarr store with `store_data.PROV`."""

from __future__ import annotations

from pathlib import Path

import pytest

from storage import ZarrActivationStore
from tests.storage.store_data import PROV


@pytest.fixture
def store(tmp_path: Path) -> ZarrActivationStore:
    return ZarrActivationStore.create_or_open(tmp_path / "features.zarr", PROV)
