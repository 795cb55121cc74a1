"""Ablation table: per-class AP of the motion pair (pipeline/ablate.py)."""

from pipeline.ablate import VARIANTS, _row, motion_columns, pair_column


def _run(left: list[float], right: list[float], avg: float) -> dict:
    return {"mAP": [avg, avg], "average_mAP": avg,
            "per_class": {"move_left": left, "move_right": right, "flash": [1.0, 0.8], "spin": [0.6, 0.6]}}


def test_motion_columns_average_tious_then_runs() -> None:
    runs = [_run([0.2, 0.4], [0.5, 0.5], 0.5), _run([0.4, 0.4], [0.7, 0.7], 0.6)]
    # move_left: (0.3 + 0.4) / 2; move_right: (0.5 + 0.7) / 2; others: mean(0.9, 0.6) in both runs
    assert motion_columns(runs) == ["35.0", "60.0", "75.0"]
    row = _row("v", ["train.model=losa"], runs, 12.0, True)
    assert row == "| v | `train.model=losa` | 55.0 | 55.0 | **55.0 ± 7.1** | 35.0 | 60.0 | 75.0 | – | 12 | yes |"


def test_motion_columns_without_the_pair() -> None:
    assert motion_columns([{"per_class": {"a": [1.0]}}]) == ["–", "–", "–"]


def test_pooled_short_adapter_variants_exist() -> None:
    pooled = [sets for name, sets in VARIANTS if "pooled" in name]
    assert pooled and all("train.short_mode=pooled" in sets for sets in pooled)


def test_short_query_and_adapter_lr_variants_exist() -> None:
    sets = dict(VARIANTS)
    assert "train.short_pool=mean" in sets["LoSA (mean short query)"]
    assert "train.adapter_lr_scale=1" in sets["LoSA (adapter lr 1x)"]


def test_pair_column_mean_and_std() -> None:
    runs = [{"pair_accuracy": {"move_left+move_right": {"accuracy": a}}} for a in (0.9, 0.8, 1.0)]
    assert pair_column(runs) == "90.0 ± 10.0"
    assert pair_column(runs[:1]) == "90.0"
    assert pair_column([{"pair_accuracy": {"move_left+move_right": {"accuracy": None}}}]) == "–"
    assert pair_column([{}]) == "–"
