"""losa-detect rebuilds the extraction recipe from a store's provenance, reference choices included."""
from __future__ import annotations

from losa.encoder.sampling import ClipSampling
from stages.extract.config import ExtractConfig
from stages.infer.detect import extract_config_from_provenance


def _cfg(**kw) -> ExtractConfig:
    base = dict(preset="tiny", layers=[2], resolution=32, sampling=ClipSampling(4, 1, 2), device="cpu")
    return ExtractConfig(**{**base, **kw})


def test_reference_recipe_is_rebuilt():
    prov = _cfg(pos_table="bicubic", reference_feature=True, resize="squash-bilinear", norm="255").provenance(
        None, precision="fp32")
    cfg = extract_config_from_provenance(prov, None, device="cpu")
    assert (cfg.pos_table, cfg.reference_feature, cfg.resize, cfg.norm) == ("bicubic", True, "squash-bilinear", "255")


def test_store_from_before_the_position_table_was_recorded():
    prov = _cfg().provenance(None, precision="fp32")
    old = {k: v for k, v in prov.items() if k not in ("pos_table", "reference_feature")}
    cfg = extract_config_from_provenance(old, None, device="cpu")
    assert cfg.pos_table == "trilinear" and cfg.reference_feature is False
