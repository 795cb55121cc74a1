"""Store keys: video ids ↔ safe file names (hostile names round trip), layer array names."""

from __future__ import annotations

import pytest

from storage import (
    layer_name,
    parse_layer_name,
    safe_key,
    unsafe_key,
)
from tests.storage.store_data import HOSTILE


def test_safe_key_hostile_names_round_trip_and_are_plain_names():
    keys = [safe_key(v) for v in HOSTILE]
    assert len(set(keys)) == len(HOSTILE)
    for video_id, key in zip(HOSTILE, keys, strict=True):
        assert unsafe_key(key) == video_id
        assert "/" not in key and "\\" not in key and "\n" not in key and " " not in key
        assert key not in (".", "..") and not key.startswith((".", "_"))
    assert safe_key("video_test_0000004") == "video_test_0000004"
    assert safe_key("ünï cödé 日本") == "ünï~20cödé~20日本"  # letters stay readable
    assert safe_key("a/b") == "a~2fb" and safe_key("~7e") == "~7e7e"


@pytest.mark.parametrize("bad", ["", "a~2F", "~zz", ".x", "_x", "a b", "x~", "~c3"])
def test_unsafe_key_rejects_non_canonical(bad):
    with pytest.raises(ValueError):
        unsafe_key(bad)


def test_safe_key_rejects_empty_and_non_str():
    with pytest.raises(ValueError, match="empty"):
        safe_key("")
    with pytest.raises(ValueError):
        safe_key(3)  # type: ignore[arg-type]


def test_layer_names():
    assert layer_name(8) == "layer_08" and layer_name(40) == "layer_40" and layer_name(123) == "layer_123"
    assert parse_layer_name("layer_08") == 8 and parse_layer_name("layer_8") is None
    assert parse_layer_name("times") is None and parse_layer_name("layer_00") is None
    with pytest.raises(ValueError):
        layer_name(0)
