"""The knob schema drives every CLI: options, params.yaml sections, validation and docs/options.md."""
from __future__ import annotations

import importlib
import json
import subprocess
import sys
from pathlib import Path

import click
import pytest
import yaml

from pipeline import options_doc
from pipeline.config import ParamsError
from pipeline.knobs import Group, KnobOption, collect, group_knobs

REPO = Path(__file__).resolve().parents[2]
CLIS = [m for _, m, _ in options_doc.COMMANDS]
SECTIONS = {"demo": "pipeline.cli_demo", "extract": "pipeline.cli_extract", "train": "pipeline.cli_train",
            "evaluate": "pipeline.cli_eval", "probe": "pipeline.cli_probe"}


def _commands(module: str) -> list[click.Command]:
    cmd = importlib.import_module(module).main
    return list(cmd.commands.values()) if isinstance(cmd, click.Group) else [cmd]


@pytest.mark.parametrize("module", CLIS)
def test_every_option_comes_from_the_schema(module):
    """No option restates a default or a choice list: all but --params are knob options (default None).
    (``losa-bench gpu`` keeps its GpuCheckSpec-driven options.)"""
    for cmd in _commands(module):
        if cmd.name == "gpu":
            continue
        for p in cmd.params:
            if isinstance(p, click.Option) and p.name not in ("params_file", "help"):
                assert isinstance(p, KnobOption), (module, p.name)
                assert p.default is None, (module, p.name)


@pytest.mark.parametrize("module", CLIS)
def test_heavy_commands_have_threads(module):
    if module == "pipeline.cli_demo":
        return  # writes videos with PyAV, no torch work
    for cmd in _commands(module):
        assert "--threads" in {o for p in cmd.params for o in getattr(p, "opts", [])}, (module, cmd.name)


def test_every_params_key_has_a_flag_and_the_repo_params_validate():
    """Each key of params.yaml and the presets is a knob of its command (a flag exists), and the
    values build the settings classes."""
    from pipeline.cli_train import _train_section

    files = [REPO / "params.yaml", *sorted((REPO / "params").glob("*.yaml"))]
    for path in files:
        data = yaml.safe_load(path.read_text())
        for sec, module in SECTIONS.items():
            if sec not in data:
                continue
            mod = importlib.import_module(module)
            given = _train_section(path) if sec == "train" else dict(data[sec])
            given.pop("videos", None)
            vals = collect({}, mod.GROUPS, given, where=sec, source=str(path))
            flags = {k.flag for g in mod.GROUPS if not g.section for k in group_knobs(g)}
            assert {k for k in given if not isinstance(given[k], dict)} <= flags, (path, sec)
            for g in mod.GROUPS:
                if g.key in ("model", "head", "nms", "run", "sampling", "extract") or not vals[g.key]:
                    continue
                g.cls.from_dict(vals[g.key])  # validates
    train = importlib.import_module("pipeline.cli_train")
    data = yaml.safe_load((REPO / "params.yaml").read_text())
    vals = collect({}, train.GROUPS, _train_section(REPO / "params.yaml"), where="train")
    assert vals["model"]["mode"] == data["train"]["model"] and vals["model"]["input_norm"] == "sequence"
    assert vals["head"]["embd_dim"] == data["train"]["head"]["embd_dim"]
    tcfg = train.TrainConfig.from_dict({**vals["train"], "nms": vals["nms"]})
    assert tcfg.epochs == data["train"]["epochs"] and tcfg.nms.sigma == data["train"]["nms"]["sigma"]


def test_unknown_key_is_one_line_with_the_closest_name():
    train = importlib.import_module("pipeline.cli_train")
    with pytest.raises(ParamsError, match=r"p.yaml: unknown key 'train.epoch' \(closest valid name: 'epochs'\)$"):
        collect({}, train.GROUPS, {"epoch": 3}, where="train", source="p.yaml")
    with pytest.raises(ParamsError, match=r"unknown key 'train.head.embd_dims' \(closest valid name: 'embd_dim'\)"):
        collect({}, train.GROUPS, {"head": {"embd_dims": 3}}, where="train", source="p.yaml")
    with pytest.raises(ParamsError, match=r"key 'train.amp': 'fp8' is not one of: auto, off, bf16, fp16"):
        collect({}, train.GROUPS, {"amp": "fp8"}, where="train", source="p.yaml")


def test_command_line_wins_and_absent_knobs_keep_the_class_default():
    train = importlib.import_module("pipeline.cli_train")
    ctx = train.main.make_context("losa-train", ["--epochs", "3", "--input-norm", "sequence",
                                                 "--head-embd-dim", "64", "--nms-sigma", "0.4"])
    vals = collect(ctx.params, train.GROUPS, {"epochs": 9, "lr": 0.01}, where="train")
    assert vals["train"] == {"epochs": 3, "lr": 0.01}
    assert vals["model"] == {"input_norm": "sequence"}
    assert vals["head"] == {"embd_dim": 64} and vals["nms"] == {"sigma": 0.4}
    cfg = train.TrainConfig.from_dict(vals["train"])
    assert cfg.batch_size == train.TrainConfig().batch_size  # the schema default, not a click default


def test_train_model_key_names_the_mode_or_holds_model_settings(tmp_path):
    from pipeline.cli_train import _train_section

    p = tmp_path / "p.yaml"
    p.write_text("train:\n  model: head-only\n  epochs: 2\n")  # dvc exp run -S train.model=head-only
    assert _train_section(p) == {"mode": "head-only", "epochs": 2}
    p.write_text("train:\n  model: {mode: side, tapped_layers: [2], head: {window: 3}}\n  head: {n_levels: 2}\n")
    assert _train_section(p) == {"mode": "side", "layers": [2], "head": {"window": 3, "n_levels": 2}}


def test_options_doc_is_current():
    text = (REPO / "docs" / "options.md").read_text(encoding="utf-8")
    assert text == options_doc.render(), "docs/options.md is stale: python -m pipeline.options_doc > docs/options.md"


def test_help_is_fast_and_imports_no_heavy_library():
    """``--help`` of every CLI imports neither torch nor sklearn nor matplotlib (lazy imports) and
    takes well under a second of CPU time inside the interpreter."""
    code = (
        "import json, sys, time\n"
        "t = time.process_time()\n"
        "import importlib; m = importlib.import_module(sys.argv[1])\n"
        "try:\n    m.main(['--help'])\nexcept SystemExit:\n    pass\n"
        "heavy = sorted(x for x in ('torch', 'sklearn', 'matplotlib', 'timm') if x in sys.modules)\n"
        "print(json.dumps({'cpu_s': time.process_time() - t, 'heavy': heavy}), file=sys.stderr)\n"
    )
    for module in CLIS:
        res = subprocess.run([sys.executable, "-c", code, module], capture_output=True, text=True, cwd=REPO,
                             timeout=60)
        report = json.loads(res.stderr.strip().splitlines()[-1])
        assert report["heavy"] == [], (module, report)
        assert report["cpu_s"] < 0.9, (module, report)


def test_group_prefixes_flags_and_nests_keys():
    from losa.head.config import HeadConfig

    knobs = {k.name for k in group_knobs(Group("head", HeadConfig, section="head"))}
    assert "embd_dim" in knobs and "regression_ranges" in knobs
    vals = collect({"head__regression_ranges": [[0, 4], [4, 1e4]]}, [Group("head", HeadConfig, section="head")],
                   {"head": {"n_levels": 2}}, where="train")
    assert HeadConfig.from_dict(vals["head"]).regression_ranges == ((0.0, 4.0), (4.0, 1e4))
