"""Inference from an activation store: rebuild a trained run and turn stored videos into detections.

`load_run` reads a run's ``model.pt`` (EMA weights + configs); `predict_store` runs batched whole-video
inference (length-sorted batches, no padding to ``max_seq_len``) and converts step coordinates to
seconds with the store's step times. `model_config_from_store` derives the model geometry
(channels, cells, grid, layers) from the store so training and inference agree.
"""
from __future__ import annotations

import math
import warnings
from pathlib import Path
from typing import Any, Mapping

import numpy as np
import torch
from torch.utils.data import DataLoader
from tqdm import tqdm

from losa.model import LoSAConfig, TALModel
from stages.data.dataset import Collate, InferenceDataset, length_sorted_batches
from stages.runtime import resolve_device
from stages.errors import StageError
from stages.provenance import require_same_provenance


def model_config_from_store(reader: Any, overrides: Mapping[str, Any], num_classes: int) -> LoSAConfig:
    """`LoSAConfig` whose geometry (channels, cells, grid, t_sub, layers) comes from the store.

    Defaults: last layer = deepest stored layer; tapped layers = every other stored layer.
    ``overrides`` holds other `LoSAConfig` fields (``layers`` is an alias of ``tapped_layers``;
    ``head`` a partial `HeadConfig` mapping).
    """
    stored, videos = reader.layers(), reader.videos()
    if not stored or not videos:
        raise StageError(f"store {getattr(reader, 'path', '')} holds no complete videos")
    o = dict(overrides)
    if "layers" in o:
        o["tapped_layers"] = o.pop("layers")
    fixed = {"channels", "cells", "grid", "t_sub", "num_classes"} & set(o)
    if fixed:
        raise StageError(f"model setting(s) {', '.join(sorted(fixed))} are fixed by the store and annotations")
    last = int(o.pop("last_layer", None) or stored[-1])
    _, cells, channels = reader.layer_shapes(videos[0])[last] if last in stored else (0, 0, 0)
    taps = o.pop("tapped_layers", None)
    taps = [v for v in stored if v != last] if taps is None else [int(v) for v in taps]
    if o.get("mode", "losa") == "head-only":
        taps = []
    missing = [v for v in [*taps, last] if v not in stored]
    if missing:
        raise StageError(f"layer(s) {missing} not in the store (stored: {stored})")
    if last in taps:
        raise StageError(f"layer {last} is the last layer and cannot also be a tapped layer")
    if not taps and o.get("mode", "losa") != "head-only":
        raise StageError(f"mode {o.get('mode', 'losa')!r} needs tapped layers but the store only holds layer {last}")
    if o.get("base_feature") == "fc_norm" and "fc_norm" not in reader.features():
        raise StageError(f"base_feature fc_norm: store {getattr(reader, 'path', '')} holds no fc_norm feature; "
                         "extract with reference_feature: true (--reference-feature), see docs/reference-recipes.md")
    layout = reader.provenance.get("tokens_layout")
    if not layout:
        g = int(round(math.sqrt(cells)))
        layout = [1, g, g] if g * g == cells else [cells, 1, 1]
    return LoSAConfig.from_dict({**o, "tapped_layers": taps, "last_layer": last, "channels": int(channels),
                                 "cells": int(cells), "t_sub": int(layout[0]), "grid": int(layout[1]),
                                 "num_classes": int(num_classes)})


def load_run(run: str | Path, device: str | torch.device = "cpu") -> tuple[TALModel, dict[str, Any]]:
    """Load a trained model from a run directory (or its ``model.pt``); returns (model in eval mode, run info)."""
    from stages.rundir import RunError, read_model_file

    state = read_model_file(run)  # one line when missing, truncated or not a model file
    info = state["info"]
    if "model_cfg" not in info:
        raise RunError(f"{run}: the model file records no model_cfg")
    cfg = dict(info["model_cfg"])
    if cfg.get("mode") == "losa" and "short_mode" not in cfg:
        cfg["short_mode"] = "pooled"  # runs from before short_mode existed have the first short adapter
    if cfg.get("mode") == "losa" and "short_pool" not in cfg:
        cfg["short_pool"] = "mean"  # runs from before short_pool existed pool the cells by their mean
    if cfg.get("mode") == "losa" and "long_context" not in cfg:
        # runs from before long_context existed: bound the long-range adapter to their training window
        cfg["long_context"] = (info.get("train_cfg") or {}).get("max_seq_len")
    model = TALModel(LoSAConfig.from_dict(cfg))
    try:
        model.load_state_dict(state["model"])
    except RuntimeError as exc:  # weights of another model (edited or mixed-up file)
        first = " ".join(str(exc).split())[:200]
        raise RunError(f"{run}: the weights do not fit the recorded model ({first})") from None
    return model.to(resolve_device(device)).eval(), info


@torch.no_grad()
def predict_store(
    model: TALModel | str | Path,
    reader: Any,
    video_ids: list[str] | None = None,
    batch_size: int = 4,
    *,
    device: str | torch.device = "auto",
    nms: Mapping[str, Any] | None = None,
    classes: list[str] | None = None,
    progress: bool = False,
    resample_steps: int | None = None,
) -> dict[str, Any]:
    """Detect actions in whole stored videos; ActivityNet results ``{"results": {vid: [{label, score,
    segment [s, e] seconds}]}}``. ``model``: a `TALModel` or a run directory (its classes and NMS
    settings are then the defaults). ``resample_steps``: resample every video to that many steps as
    in training (None: the run's setting, else 0 = native length). Step coordinates become seconds with the store's step times
    (``t = times[0] + x * dt``), clipped to ``[0, duration]``. Always in float32 (`TALModel.predict`:
    bf16 logits would tie the scores that rank detections), whatever precision the run trained in."""
    if isinstance(model, (str, Path)):
        run_name = model
        model, info = load_run(model, device)
        # never score a run on features of another recipe (one line naming each differing key)
        require_same_provenance(info.get("store_provenance"), reader.provenance,
                                what=f"run {run_name}", store=getattr(reader, "path", "?"))
        classes = classes or info["classes"]
        nms = nms if nms is not None else info["train_cfg"].get("nms")
        if resample_steps is None:
            resample_steps = int(info["train_cfg"].get("resample_steps", 0) or 0)
    if classes is None:
        raise ValueError("predict_store needs the class list (pass classes= or a run directory)")
    dev = next(model.parameters()).device
    ids = list(reader.videos() if video_ids is None else video_ids)
    results: dict[str, list[dict[str, Any]]] = {v: [] for v in ids}
    if not ids:
        return {"version": "losa", "results": results, "external_data": {}}
    ds = InferenceDataset(reader, ids, model.cfg.required_layers, resample_steps=int(resample_steps or 0),
                          mean_layers=model.cfg.mean_layers, features=model.cfg.required_features)
    loader = DataLoader(ds, batch_sampler=length_sorted_batches(ds.lengths, batch_size),
                        collate_fn=Collate(model.head.strides[-1]))
    index = {v: i for i, v in enumerate(ids)}
    for batch in tqdm(loader, desc="predict", leave=False, disable=not progress):
        feats = {k: v.to(dev) for k, v in batch["feats"].items()}
        dets = model.predict(feats, batch["mask"].to(dev), dict(nms or {}))
        for vid, det in zip(batch["video_ids"], dets):
            geo = ds.geometries[index[vid]]
            duration = float(reader.video_info(vid).get("duration") or geo.to_seconds(geo.num_steps - 0.5))
            segs = np.clip(geo.to_seconds(det["segments"].float().numpy().reshape(-1, 2)), 0.0, duration)
            scores, labels = det["scores"].float().numpy(), det["labels"].numpy()
            for j in np.argsort(-scores, kind="stable"):
                if segs[j, 1] > segs[j, 0]:
                    results[vid].append({"label": classes[int(labels[j])], "score": float(scores[j]),
                                         "segment": [float(segs[j, 0]), float(segs[j, 1])]})
    return {"version": "losa", "results": results, "external_data": {}}



class SubsetRequired(ValueError):
    """`predict_run` needs a subset: the annotations have several (listed in ``subsets``)."""

    def __init__(self, subsets: list[str]) -> None:
        super().__init__(f"a subset is required: the annotations have subsets {subsets}")
        self.subsets = subsets


def predict_run(run_dir: str | Path, store: str | Path | None = None, annotations: str | Path | None = None,
                subset: str | None = None, *, exclude: Any = (), classes: str | Path | None = None,
                fmt: str = "auto", device: str = "auto",
                predictions_out: str | Path | None = None,
                allow_partial_classes: bool = False) -> tuple[dict[str, Any], Path]:
    """Detect actions in the stored videos of ``subset`` with a trained run (its EMA weights and NMS
    settings); returns (ActivityNet results dict, annotations path used).

    ``store`` / ``annotations`` default to the ones recorded in the run's ``run.json``; ``exclude``:
    video ids to leave out (e.g. THUMOS-14 exclusions); ``predictions_out``: also write the results
    there (atomically)."""
    from stages.data.annotations import load_annotations
    from stages.rundir import RunError, read_run_info
    from storage import open_store
    from storage.atomic import atomic_write_json

    run_dir = Path(run_dir)
    info = read_run_info(run_dir)
    annotations = Path(annotations or info["annotations"])
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # the evaluation reports the annotation warnings once
        ann = load_annotations(annotations, classes, fmt,
                               allow_partial_classes=allow_partial_classes).exclude(set(exclude))
    subsets = ann.subsets()
    if subset is None and len(subsets) != 1:
        raise SubsetRequired(subsets)
    subset = subset or subsets[0]
    videos = ann.videos_in(subset)
    reader = open_store(store or Path(info["store"]))
    stored = set(reader.videos())
    absent = [v for v in videos if v not in stored]
    if absent:
        raise RunError(f"{len(absent)} video(s) of subset '{subset}' are not in the store "
                       f"(first: {absent[0]}); extract them first")
    results = predict_store(run_dir, reader, videos, device=device)
    results["external_data"] = {"run": str(run_dir), "store": str(reader.path)}
    if predictions_out is not None:
        atomic_write_json(predictions_out, results, indent=None)
    return results, annotations
