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
from typing import Any

import click

from pipeline.config import ParamsError, load_params, merge_cli, section
from pipeline.errors import CliError, handle_user_errors

__all__ = ["main", "parse_layer_list"]

MODEL_OPTIONS = ("mode", "layers", "last_layer", "adapters", "fusion")
PROTOCOL_OPTIONS = ("resample_steps", "class_agnostic")  # ActivityNet protocol (docs/activitynet.md)
TRAIN_OPTIONS = ("epochs", "batch_size", "lr", "weight_decay", "warmup_epochs", "max_seq_len", "seed",
                 "ema_decay", "amp", "num_workers", "eval_every", "cache_features", "cache_max_mb",
                 "checkpoint_every", "device")


class _CacheChoice(click.ParamType):
    """auto | on | off (also true/false/yes/no, and YAML booleans from params.yaml)."""

    name = "auto|on|off"
    _MAP = {"auto": "auto", "on": True, "true": True, "yes": True, "1": True,
            "off": False, "false": False, "no": False, "0": False}

    def convert(self, value, param, ctx):
        if isinstance(value, bool) or value == "auto":
            return value
        key = str(value).strip().lower()
        if key not in self._MAP:
            self.fail(f"{value!r} is not one of auto, on, off", param, ctx)
        return self._MAP[key]


def parse_layer_list(text: str | None) -> list[int] | None:
    """'8,16' → [8, 16]; None, '' or 'auto' → None (every stored layer but the last)."""
    if text is None or str(text).strip().lower() in ("", "auto"):
        return None
    try:
        return [int(p) for p in str(text).split(",") if p.strip()]
    except ValueError:
        raise click.BadParameter(f"{text!r} is not a comma list of block indices (e.g. 8,16)",
                                 param_hint="--layers") from None


@click.command(context_settings={"help_option_names": ["-h", "--help"]})
@click.option("--store", type=click.Path(path_type=Path), help="Activation store (.zarr folder or .h5 file).")
@click.option("--annotations", type=click.Path(path_type=Path), help="ActivityNet JSON, THUMOS-14 folder or CSV.")
@click.option("--out", type=click.Path(file_okay=False, path_type=Path), help="Run directory, e.g. runs/NAME.")
@click.option("--classes", type=click.Path(dir_okay=False, path_type=Path), default=None,
              help="Class list file (one per line); default: from the annotations.")
@click.option("--train-subset", default="training", show_default=True, help="Annotation subset to train on.")
@click.option("--val-subset", default=None, help="Subset evaluated (EMA weights, mAP) during/after training.")
@click.option("--mode", type=click.Choice(["losa", "head-only", "side"]), default="losa", show_default=True)
@click.option("--layers", default="auto", show_default=True,
              help="Tapped layers, e.g. 8,16,24 (auto: every stored layer except the last).")
@click.option("--last-layer", type=int, default=None, help="Last layer (default: the deepest stored).")
@click.option("--adapters", type=click.Choice(["both", "long", "short"]), default="both", show_default=True)
@click.option("--fusion", type=click.Choice(["gated", "sigmoid", "sum", "concat"]), default="gated",
              show_default=True)
@click.option("--epochs", type=click.IntRange(1), default=30, show_default=True)
@click.option("--batch-size", type=click.IntRange(1), default=2, show_default=True)
@click.option("--lr", type=float, default=1e-4, show_default=True)
@click.option("--weight-decay", type=float, default=0.05, show_default=True)
@click.option("--warmup-epochs", type=click.IntRange(0), default=5, show_default=True)
@click.option("--max-seq-len", type=click.IntRange(1), default=2304, show_default=True,
              help="Training window in steps (longer videos are randomly cropped).")
@click.option("--seed", type=int, default=2025, show_default=True)
@click.option("--ema-decay", type=float, default=0.999, show_default=True, help="0 disables the EMA.")
@click.option("--amp", type=click.Choice(["auto", "off", "bf16", "fp16"]), default="auto", show_default=True,
              help="auto: bf16 autocast on CUDA, fp32 on CPU.")
@click.option("--num-workers", type=click.IntRange(0), default=0, show_default=True, help="DataLoader workers.")
@click.option("--eval-every", type=click.IntRange(0), default=0, show_default=True,
              help="Validate every N epochs (0: only at the end; needs --val-subset).")
@click.option("--cache-features", type=_CacheChoice(), default="auto", show_default=True,
              help="Keep the features read in RAM after the first epoch (auto: when they fit in --cache-max-mb).")
@click.option("--cache-max-mb", type=click.FloatRange(0), default=2048.0, show_default=True,
              help="Largest store (float32 MiB of the layers the model reads) that auto caching keeps in RAM.")
@click.option("--checkpoint-every", type=click.IntRange(1), default=5, show_default=True,
              help="Write the resumable checkpoint every N epochs (always after the last).")
@click.option("--resample-steps", type=click.IntRange(0), default=0, show_default=True,
              help="Resample every video to this many steps (linear; ActivityNet protocol: 192 or "
                   "128; 0 keeps each video's own length). Recorded; prediction does the same.")
@click.option("--class-agnostic/--no-class-agnostic", default=False, show_default=True,
              help="Train one 'action' class (label detections later with --classifier-scores).")
@click.option("--device", default="auto", show_default=True, help="auto, cpu, cuda, cuda:N.")
@click.option("--resume", is_flag=True, help="Continue the run in --out from its checkpoint.")
@click.option("--allow-missing", is_flag=True, help="Skip annotated videos absent from the store (warn).")
@click.option("--progress/--no-progress", default=True, show_default=True)
@click.option("--params", "params_file", type=click.Path(dir_okay=False, path_type=Path), default=None,
              help="params.yaml whose 'train' section supplies defaults.")
@click.pass_context
@handle_user_errors
def main(ctx: click.Context, params_file: Path | None, **cli: Any) -> None:
    """Train a temporal action localisation model from stored activations."""
    opts, model_extra, nms = _merged_options(ctx, params_file, cli)
    for name in ("store", "annotations", "out"):
        if opts[name] is None:
            raise click.UsageError(f"missing --{name}")
    logging.basicConfig(level=logging.INFO, format="%(message)s")
    from stages.train.run import NonFiniteLossError, train
    from stages.train.config import TrainConfig

    model_cfg = dict(model_extra)
    model_cfg.update({k: opts[k] for k in ("mode", "adapters", "fusion")})
    layers = parse_layer_list(opts["layers"])
    if layers is not None:
        model_cfg["tapped_layers"] = layers
    if opts["last_layer"] is not None:
        model_cfg["last_layer"] = opts["last_layer"]
    tcfg = TrainConfig.from_dict({**opts.get("_train_extra", {}),
                                  **{k: opts[k] for k in (*TRAIN_OPTIONS, *PROTOCOL_OPTIONS)},
                                  "nms": nms})
    try:
        result = train(opts["store"], opts["annotations"], opts["out"], model_cfg, tcfg,
                       train_subset=opts["train_subset"], val_subset=opts["val_subset"],
                       resume=opts["resume"], classes=opts["classes"], allow_missing=opts["allow_missing"],
                       progress=opts["progress"])
    except NonFiniteLossError as exc:
        raise CliError(str(exc), exit_code=3) from exc
    except KeyboardInterrupt:
        click.echo(f"interrupted: rerun with --resume to continue from {opts['out']}/checkpoint.pt", err=True)
        sys.exit(130)
    final = result.summary["final"]
    line = f"{result.run_dir}: {result.summary['epochs_done']} epoch(s), loss {final.get('loss', float('nan')):.4f}"
    if "val_mAP" in final:
        line += f", {opts['val_subset']} average mAP {100 * final['val_mAP']:.2f}"
    click.echo(line + f"; model written to {result.run_dir / 'model.pt'}")


def _merged_options(ctx: click.Context, params_file: Path | None, cli: dict) -> tuple[dict, dict, dict]:
    """(options, extra model settings, nms settings) from the command line and params.yaml."""
    if params_file is None:
        return cli, {}, {}
    defaults = section(load_params(params_file), "train", str(params_file))
    model = defaults.pop("model", None) or {}
    if isinstance(model, str):  # `dvc exp run -S train.model=head-only` names the mode
        model = {"mode": model}
    nms = defaults.pop("nms", None) or {}
    if not isinstance(model, dict) or not isinstance(nms, dict):
        raise ParamsError(f"{params_file}: train.model and train.nms must be mappings")
    model = dict(model)
    for key in MODEL_OPTIONS:  # model.mode etc. act like the options of the same name
        if key in model and key not in defaults:
            defaults[key] = model.pop(key)
    if "tapped_layers" in model and "layers" not in defaults:
        defaults["layers"] = model.pop("tapped_layers")
    # LoSAConfig fields without a command-line option (head, adapter_dim, short_window, ...) may
    # also sit directly in the train section.
    from losa.model import LoSAConfig
    from stages.train.config import TrainConfig

    for k in list(defaults):
        if k in LoSAConfig.__dataclass_fields__ and k not in cli:
            model.setdefault(k, defaults.pop(k))
    # TrainConfig fields without a command-line option (schedule, clip_grad, trunc_thresh, ...)

    extra = {k: defaults.pop(k) for k in list(defaults)
             if k in TrainConfig.__dataclass_fields__ and k not in cli and k != "nms"}
    opts = merge_cli(ctx, defaults, cli)
    opts["_train_extra"] = extra
    return opts, model, nms


if __name__ == "__main__":  # pragma: no cover
    main()
