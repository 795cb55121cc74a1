"""The training run directory: the one module that names its files and reads / writes them.

Layout of ``<run>/`` (written by `stages.train.run.train`, read by inference, `losa-eval --run`
and `losa-detect`)::

    run.json         what the run was trained on and with (store path + provenance, backbone
                     checkpoint path, annotations, classes, model_cfg, train_cfg, world_size)
    model.pt         final EMA weights + run info            (format "losa-model", version 1)
    checkpoint.pt    full training state for exact resume   (format "losa-checkpoint")
    metrics.csv      one row per epoch, every column (loss terms, lr, seconds, val_mAP...)
    dvclive/         DVCLive log of the same rows: metrics.json (latest epoch) and
                     plots/metrics/<name>.tsv (one curve per metric, x = epoch)

Every file is written atomically (`storage.atomic`), so an interrupted run never leaves a torn file.
"""
from __future__ import annotations

import csv
import io
import json
import os
from pathlib import Path
from typing import Any, Mapping, Sequence

from storage.atomic import atomic_write, atomic_write_json
from stages.errors import StageError
from stages.torchfile import load_torch_file

RUN_FILE = "run.json"
MODEL_FILE = "model.pt"
CHECKPOINT_FILE = "checkpoint.pt"
METRICS_CSV = "metrics.csv"
LIVE_DIR = "dvclive"
MODEL_FORMAT = "losa-model"
MODEL_FORMAT_VERSION = 1
CHECKPOINT_FORMAT = "losa-checkpoint"
#: run.json keys every reader relies on.
REQUIRED_INFO_KEYS = ("store_provenance", "classes", "model_cfg", "train_cfg")
#: metrics.csv's leading columns (validation columns follow when present).
METRIC_FIELDS = ("epoch", "iterations", "loss", "cls_loss", "reg_loss", "lr", "seconds")

__all__ = ["CHECKPOINT_FILE", "LIVE_DIR", "METRICS_CSV", "METRIC_FIELDS", "MODEL_FILE", "RUN_FILE", "RunError",
           "read_model_file", "read_run_info", "write_metrics_csv", "write_model_file", "write_run_info"]


class RunError(StageError):
    """The run directory cannot be used (missing or inconsistent files)."""


def read_run_info(run_dir: str | os.PathLike) -> dict[str, Any]:
    """``run_dir/run.json`` as a dict; RunError when it is missing, unreadable or incomplete."""
    run_dir = Path(run_dir)
    path = run_dir / RUN_FILE
    if not run_dir.is_dir():
        raise FileNotFoundError(f"run directory not found: {run_dir}")
    if not path.is_file():
        raise RunError(f"{run_dir} is not a training run: {RUN_FILE} not found")
    try:
        info = json.loads(path.read_text(encoding="utf-8"))
    except (json.JSONDecodeError, UnicodeDecodeError) as exc:
        raise RunError(f"{path}: not valid JSON ({exc})") from None
    missing = [k for k in REQUIRED_INFO_KEYS if k not in info]
    if missing:
        raise RunError(f"{path}: missing key(s) {', '.join(missing)}")
    return info


def write_run_info(run_dir: str | os.PathLike, info: Mapping[str, Any]) -> Path:
    return atomic_write_json(Path(run_dir) / RUN_FILE, dict(info))


def write_model_file(path: str | os.PathLike, state_dict: Mapping[str, Any], info: Mapping[str, Any]) -> Path:
    """Final weights (moved to CPU) with the run info needed to rebuild the model."""
    import torch

    state = {"format": MODEL_FORMAT, "format_version": MODEL_FORMAT_VERSION, "info": dict(info),
             "model": {k: v.detach().cpu() for k, v in state_dict.items()}}
    return atomic_write(path, lambda fh: torch.save(state, fh))


def read_model_file(run: str | os.PathLike) -> dict[str, Any]:
    """The ``model.pt`` of a run directory (or the file itself): ``{"info", "model", ...}``."""
    path = Path(run)
    path = path / MODEL_FILE if path.is_dir() else path
    if not path.is_file():
        raise FileNotFoundError(f"trained model not found: {path} (did training finish?)")
    state = load_torch_file(path, "trained model", MODEL_FORMAT)  # one line if corrupt/foreign
    if not isinstance(state.get("info"), dict) or not isinstance(state.get("model"), dict):
        raise RunError(f"{path} is not a complete LoSA model file (no info/model inside)")
    return state


def write_metrics_csv(run_dir: str | os.PathLike, history: Sequence[Mapping[str, Any]]) -> Path:
    """``metrics.csv``: the `METRIC_FIELDS` columns, then any others (validation mAPs) in name order."""
    extra = sorted({k for row in history for k in row} - set(METRIC_FIELDS))
    text = io.StringIO()
    writer = csv.DictWriter(text, fieldnames=[*METRIC_FIELDS, *extra], restval="")
    writer.writeheader()
    writer.writerows(history)
    return atomic_write(Path(run_dir) / METRICS_CSV, text.getvalue())
