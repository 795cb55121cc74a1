"""The knob schema (losa/schema.py): one-line errors naming the setting, closest-name hints,
JSON round trips, introspection, and choice lists that agree with the modules implementing them."""
from __future__ import annotations

import json
from pathlib import Path
from typing import Literal

import pytest

from losa.config import LoSAConfig
from losa.errors import LosaError
from losa.head.config import HeadConfig
from losa.schema import describe, knob, settings


@settings(what="toy", error=LosaError, frozen=True)
class Toy:
    count: int = knob(3, "How many.", ge=1)
    mode: Literal["a", "b"] = knob("a", "Which.")
    path: Path | None = knob(None, "Where.")
    pairs: tuple[tuple[float, float], ...] = knob(((0, 1),), "Ranges.")


def test_errors_are_one_line_and_name_the_setting():
    with pytest.raises(LosaError, match=r"^toy setting count=0: input should be greater than or equal to 1$"):
        Toy(count=0)
    with pytest.raises(LosaError, match=r"^toy setting mode 'c' is not one of: a, b$"):
        Toy(mode="c")
    with pytest.raises(LosaError, match=r"^unknown toy setting 'cont' \(closest valid name: 'count'\)$"):
        Toy.from_dict({"cont": 2})
    with pytest.raises(LosaError, match=r"^unknown head setting 'windw' \(closest valid name: 'window'\)$"):
        LoSAConfig(tapped_layers=(1,), head={"windw": 3})
    with pytest.raises(LosaError, match=r"model setting head.window=-1"):
        LoSAConfig(tapped_layers=(1,), head={"window": -1})


def test_round_trip_through_json_and_types_coerced():
    t = Toy(count=2, path="x/y", pairs=[[0, 4], [4, 8]])
    assert t.path == Path("x/y") and t.pairs == ((0.0, 4.0), (4.0, 8.0))
    d = json.loads(json.dumps(t.to_dict()))
    assert d == {"count": 2, "mode": "a", "path": "x/y", "pairs": [[0.0, 4.0], [4.0, 8.0]]}
    assert Toy.from_dict(d) == t
    cfg = LoSAConfig(tapped_layers=[2, 3], head={"embd_dim": 32, "fpn_dim": 32, "head_dim": 32})
    assert LoSAConfig.from_dict(json.loads(json.dumps(cfg.to_dict()))) == cfg


def test_describe_gives_each_knob_once():
    knobs = {k.name: k for k in describe(Toy)}
    assert knobs["count"].default == 3 and knobs["count"].bounds == {"ge": 1} and knobs["count"].help == "How many."
    assert knobs["mode"].choices == ("a", "b") and knobs["path"].optional and knobs["path"].base is Path
    flags = {k.name: k.flag for k in describe(LoSAConfig)}
    assert flags["tapped_layers"] == "layers" and not {k.name: k.cli for k in describe(LoSAConfig)}["channels"]
    assert all(k.help for k in describe(LoSAConfig)) and all(k.help for k in describe(HeadConfig))


def test_choice_lists_agree_with_the_modules_that_implement_them():
    from losa.adapters.fusion import FUSION_MODES
    from losa.adapters.short import SHORT_MODES
    from losa.encoder.backbone import POS_TABLES
    from losa.metrics.detection import TIOU_PRESETS
    from stages.data.annotations import THUMOS_POLICIES
    from stages.evaluate.config import EvalSettings
    from stages.extract import config as extract_config
    from stages.extract import decode

    ann = {k.name: k for k in describe(LoSAConfig)}
    assert ann["fusion"].choices == FUSION_MODES and ann["short_mode"].choices == SHORT_MODES
    assert extract_config.POS_TABLES == POS_TABLES and extract_config.RESIZE_MODES == decode.RESIZE_MODES
    ev = {k.name: k for k in describe(EvalSettings)}
    assert set(ev["preset"].choices) == set(TIOU_PRESETS)
    assert set(ev["exclude_policy"].choices) == set(THUMOS_POLICIES)
    from stages.demo.config import DemoSettings
    from stages.demo.data import CLUTTER

    assert set({k.name: k for k in describe(DemoSettings)}["clutter"].choices) == set(CLUTTER)
