"""`losa-train`: train LoSA adapters + gated fusion + ActionFormer head from an activation store.

Example::

    losa-train --store features.zarr --annotations thumos14.json --out runs/losa \\
               --train-subset validation --val-subset test --mode losa --layers 8,16,24,32

Multi-GPU: ``torchrun --nproc_per_node 4 -m pipeline.cli_train ...`` (DDP; rank 0 writes the run).
With ``--params params.yaml`` the ``train`` section supplies defaults (keys named like the options);
its optional ``model`` mapping holds further model settings (``adapter_dim``, ``head: {...}``; also
``mode``/``layers``/``adapters``/``fusion``) and ``nms`` the post-processing settings.

Exit status: 0 trained, 1 usage or data error (one line), 3 training diverged (NaN/inf; the last
good checkpoint is kept), 130 interrupted (rerun with ``--resume``).
"""
from __future__ import annotations

import logging
import sys
from pathlib import Path
from typing import Any, Literal

import click

from losa.config import LoSAConfig
from losa.head.config import HeadConfig
from losa.schema import knob, settings
from pipeline.config import ParamsError, load_params, section
from pipeline.errors import CliError, handle_user_errors
from pipeline.knobs import Group, collect, knob_options
from stages.threads import ThreadSettings, apply_threads
from stages.train.config import NMSConfig, TrainConfig

__all__ = ["GROUPS", "TrainRun", "main", "parse_layer_list"]

@settings(what="losa-train")
class TrainRun:
    """What to train on and where to write (the ``train`` section may hold these keys too)."""

    store: Path | None = knob(None, "Activation store (.zarr folder or .h5 file).")
    annotations: Path | None = knob(None, "ActivityNet JSON, THUMOS-14 folder or CSV.")
    out: Path | None = knob(None, "Run directory, e.g. runs/NAME.")
    classes: Path | None = knob(None, "Class list file (one per line); default: from the annotations.")
    train_subset: str = knob("training", "Annotation subset to train on.")
    val_subset: str | None = knob(None, "Subset evaluated (EMA weights, mAP) during/after training.")
    resume: bool = knob(False, "Continue the run in --out from its checkpoint.")
    allow_missing: bool = knob(False, "Skip annotated videos absent from the store (warn).")
    allow_partial_classes: bool = knob(
        False, "Train classes without a segment in the training subset (and THUMOS class files of "
               "one split only); refused by default as a likely typo.")
    duplicates: Literal["keep", "drop"] = knob(
        "keep", "Duplicate ground-truth segments: keep (ActivityNet evaluator) or drop (ActionFormer); "
                "a warning gives their count either way.")
    progress: bool = knob(True, "Show a progress bar.")


#: The settings losa-train offers, in --help order; params.yaml's ``train`` section has the same keys
#: (``head`` and ``nms`` as mappings).
GROUPS = (
    Group("run", TrainRun),
    Group("model", LoSAConfig, raw=("tapped_layers",),
          shown={"tapped_layers": "auto", "last_layer": "the deepest stored layer"}),
    Group("train", TrainConfig),
    Group("runtime", ThreadSettings),
    Group("head", HeadConfig, section="head"),
    Group("nms", NMSConfig, section="nms"),
)


def parse_layer_list(text: str | None) -> list[int] | None:
    """'8,16' (or [8, 16]) → [8, 16]; None, '' or 'auto' → None (every stored layer but the last)."""
    if isinstance(text, (list, tuple)):
        return [int(v) for v in text]
    if text is None or str(text).strip().lower() in ("", "auto"):
        return None
    try:
        return [int(p) for p in str(text).strip("[]").split(",") if p.strip()]
    except ValueError:
        raise click.BadParameter(f"{text!r} is not a comma list of block indices (e.g. 8,16)",
                                 param_hint="--layers") from None


@click.command(context_settings={"help_option_names": ["-h", "--help"]})
@knob_options(*GROUPS)
@click.option("--params", "params_file", type=click.Path(dir_okay=False, path_type=Path), default=None,
              help="params.yaml whose 'train' section supplies defaults (same keys as the options).")
@handle_user_errors
def main(params_file: Path | None, **cli: Any) -> None:
    """Train a temporal action localisation model from stored activations."""
    vals = collect(cli, GROUPS, _train_section(params_file), where="train", source=str(params_file))
    run = TrainRun.from_dict(vals["run"])
    for name in ("store", "annotations", "out"):
        if getattr(run, name) is None:
            raise click.UsageError(f"missing --{name}")
    model_cfg = dict(vals["model"])
    layers = parse_layer_list(model_cfg.pop("tapped_layers", None))
    if layers is not None:
        model_cfg["tapped_layers"] = layers
    if vals["head"]:
        model_cfg["head"] = vals["head"]
    tcfg = TrainConfig.from_dict({**vals["train"], "nms": vals["nms"]})
    apply_threads(ThreadSettings.from_dict(vals["runtime"]).threads)
    logging.basicConfig(level=logging.INFO, format="%(message)s")
    from stages.rundir import CHECKPOINT_FILE, MODEL_FILE
    from stages.train.run import NonFiniteLossError, train

    try:
        result = train(run.store, run.annotations, run.out, model_cfg, tcfg,
                       train_subset=run.train_subset, val_subset=run.val_subset,
                       resume=run.resume, classes=run.classes, allow_missing=run.allow_missing,
                       progress=run.progress, allow_partial_classes=run.allow_partial_classes,
                       duplicates=run.duplicates)
    except NonFiniteLossError as exc:
        raise CliError(str(exc), exit_code=3) from exc
    except KeyboardInterrupt:
        click.echo(f"interrupted: rerun with --resume to continue from {Path(run.out) / CHECKPOINT_FILE}", err=True)
        sys.exit(130)
    final = result.summary["final"]
    line = f"{result.run_dir}: {result.summary['epochs_done']} epoch(s), loss {final.get('loss', float('nan')):.4f}"
    if "val_mAP" in final:
        line += f", {run.val_subset} average mAP {100 * final['val_mAP']:.2f}"
    click.echo(line + f"; model written to {result.run_dir / MODEL_FILE}")


def _train_section(params_file: Path | None) -> dict:
    """The ``train`` section with its optional ``model`` key unfolded: a string names the mode
    (``dvc exp run -S train.model=head-only``); a mapping holds model settings (``mode``,
    ``tapped_layers``/``layers``, ``head: {...}``, ...) that keys of the section itself override."""
    if params_file is None:
        return {}
    defaults = section(load_params(params_file), "train", str(params_file))
    model = defaults.pop("model", None)
    if model is None:
        return defaults
    if isinstance(model, str):
        model = {"mode": model}
    if not isinstance(model, dict):
        raise ParamsError(f"{params_file}: train.model must be a mode name or a mapping")
    model = dict(model)
    if "tapped_layers" in model:
        model.setdefault("layers", model.pop("tapped_layers"))
    head = {**(model.pop("head", None) or {}), **(defaults.get("head") or {})}
    merged = {**{f"{k}": v for k, v in model.items()}, **defaults}
    if head:
        merged["head"] = head
    return merged


if __name__ == "__main__":  # pragma: no cover
    main()
