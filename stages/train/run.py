"""Training stage: adapters + fusion + ActionFormer head trained from an activation store.

`train()` runs AdamW with decay / no-decay groups, linear warm-up then cosine decay per iteration,
gradient clipping, a model EMA (its weights are the ones evaluated and exported), optional AMP and
DDP (when launched by ``torchrun``). Randomness is reseeded from ``(seed, epoch, rank)`` at every
epoch start and data windows depend only on ``(seed, epoch, index)``, so ``resume=True`` after an
interruption ends with exactly the weights of an uninterrupted run (schedule and EMA:
`stages.train.schedule`; process group, seeds and RNG state: `stages.train.distributed`).

The run directory's files (``run.json``, ``checkpoint.pt`` every ``checkpoint_every`` epochs,
``metrics.csv`` and the DVCLive curves per epoch, ``model.pt`` = final EMA weights + configs) are
defined in `stages.rundir`; `stages.infer.predict` turns a run into ActivityNet-format detections.
"""
from __future__ import annotations

import logging
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Mapping

import torch
from torch.utils.data import DataLoader, DistributedSampler
from tqdm import tqdm

from losa.model import TALModel
from stages.data.annotations import Annotations, load_annotations
from stages.data.dataset import Collate, StoreDataset
from stages.infer.predict import model_config_from_store, predict_store
from stages.data.holdout import holdout_of
from stages.rundir import (CHECKPOINT_FILE, CHECKPOINT_FORMAT, MODEL_FILE, RUN_FILE, read_run_info,
                           write_metrics_csv, write_model_file, write_run_info)
from stages.runtime import amp_dtype, autocast_context
from stages.train.live import CurveLog
from stages.train.config import TrainConfig
from stages.train.distributed import Dist, epoch_seed, rng_state, seed_everything, set_rng_state
from stages.train.schedule import WarmupCosine, fused_adamw, make_ema
from storage import open_store
from storage.atomic import atomic_write
from stages.errors import StageError
from stages.provenance import require_same_provenance
from stages.torchfile import load_torch_file
from stages.data.checks import require_trained_classes

log = logging.getLogger(__name__)


class NonFiniteLossError(RuntimeError):
    """Training diverged (NaN/inf loss or gradient); the last good checkpoint is kept."""


class RunDirError(StageError):
    """The run directory cannot be used as asked (existing run without resume, bad checkpoint)."""


@dataclass
class TrainResult:
    """What `train` returns: the run summary plus the trained modules (raw and EMA)."""

    run_dir: Path
    summary: dict[str, Any]
    model: TALModel
    ema: TALModel | None


def _checkpoint_path(reader: Any) -> str | None:
    """Backbone checkpoint path recorded with the store's videos (the detect stage re-extracts with it).

    Every video of a store was extracted with the same weights (same sha256 in the provenance), so the
    first video's record is the store's; random-weight stores have none."""
    if (reader.provenance.get("checkpoint") or {}).get("sha256") in (None, "random"):
        return None
    videos = reader.videos()
    path = (reader.video_info(videos[0]).get("extra") or {}).get("checkpoint_path") if videos else None
    return str(path) if path else None


def _check_same(kind: str, saved: Mapping[str, Any], given: Mapping[str, Any], allowed: set[str]) -> None:
    diff = sorted(k for k in set(saved) | set(given) if k not in allowed and saved.get(k) != given.get(k))
    if diff:
        raise RunDirError(f"resume: {kind} differs from the checkpoint in: {', '.join(diff)}")


def train(
    store_path: str | Path | Any,
    annotations: str | Path | Annotations,
    out_dir: str | Path,
    model_cfg: Mapping[str, Any] | None = None,
    train_cfg: TrainConfig | Mapping[str, Any] | None = None,
    train_subset: str = "training",
    val_subset: str | None = None,
    resume: bool = False,
    *,
    classes: Any = None,
    allow_missing: bool = False,
    progress: bool = True,
    allow_partial_classes: bool = False,
    duplicates: str = "keep",
) -> TrainResult:
    """Train a `TALModel` on the store's activations; returns the run summary and the modules.

    ``store_path``: store path (or an opened reader); ``annotations``: path or `Annotations`;
    ``model_cfg``: `LoSAConfig` overrides (e.g. ``mode``, ``tapped_layers``, ``head``), the rest is
    derived from the store; ``resume``: continue from ``out_dir/checkpoint.pt``;
    ``allow_partial_classes``: train classes that have no segment in ``train_subset`` (refused by
    default, `stages.data.checks`); ``duplicates``: "keep" / "drop" duplicate ground-truth segments.
    """
    tcfg = train_cfg if isinstance(train_cfg, TrainConfig) else TrainConfig.from_dict(train_cfg)
    dist = Dist(tcfg.device)
    try:
        return _fit(store_path, annotations, Path(out_dir), dict(model_cfg or {}), tcfg, train_subset,
                    val_subset, resume, classes, allow_missing, progress, dist,
                    allow_partial_classes=allow_partial_classes, duplicates=duplicates)
    finally:
        dist.close()


def _fit(store_path: Any, annotations: Any, run_dir: Path, overrides: dict, tcfg: TrainConfig,
         train_subset: str, val_subset: str | None, resume: bool, classes: Any, allow_missing: bool,
         progress: bool, dist: Dist, *, allow_partial_classes: bool = False,
         duplicates: str = "keep") -> TrainResult:
    ckpt_path = run_dir / CHECKPOINT_FILE
    ckpt = None
    if resume:
        if not ckpt_path.is_file():
            raise RunDirError(f"nothing to resume: {ckpt_path} does not exist")
        ckpt = load_torch_file(ckpt_path, "training checkpoint", CHECKPOINT_FORMAT)
        missing = [k for k in ("model", "optimizer", "scheduler", "epoch", "model_cfg", "train_cfg", "classes")
                   if k not in ckpt]
        if missing:
            raise RunDirError(f"cannot resume from {ckpt_path}: it lacks {', '.join(missing)}")
    elif ckpt_path.exists():
        raise RunDirError(f"{run_dir} already holds a training run; pass resume or choose another output")
    reader = open_store(store_path) if isinstance(store_path, (str, Path)) else store_path
    ann = (annotations if isinstance(annotations, Annotations) else
           load_annotations(annotations, classes, allow_partial_classes=allow_partial_classes,
                            duplicates=duplicates))
    if not tcfg.class_agnostic:  # a class without training examples is a mistake, not a class
        require_trained_classes(ann, train_subset, allow_partial_classes)
    # the long-range adapter attends over at most the training window, at inference too
    overrides = {"long_context": tcfg.max_seq_len, **overrides}
    mcfg = model_config_from_store(reader, overrides, 1 if tcfg.class_agnostic else len(ann.classes))
    if val_subset and not ann.ground_truth(val_subset):  # fail now, not after the last epoch
        raise StageError(f"validation subset {val_subset!r} has no ground-truth segments")
    if ckpt is not None:
        # the features must be those the run was trained on so far (checkpoint, else run.json)
        recorded = ckpt.get("store_provenance") if isinstance(ckpt, dict) else None
        if recorded is None and (run_dir / RUN_FILE).is_file():
            recorded = read_run_info(run_dir).get("store_provenance")
        require_same_provenance(recorded, reader.provenance, what=f"resume: run {run_dir}",
                                store=getattr(reader, "path", store_path))
        _check_same("model config", ckpt["model_cfg"], mcfg.to_dict(), set())
        _check_same("train config", ckpt["train_cfg"], tcfg.to_dict(),
                    {"epochs", "num_workers", "device", "eval_every", "eval_batch_size", "checkpoint_every",
                     "cache_features", "cache_max_mb", "nms", "eval_tious", "fused_optimizer"})
        if list(ckpt["classes"]) != list(ann.classes):
            raise RunDirError("resume: the class list differs from the checkpoint's")

    held_out: list[str] = []
    if tcfg.holdout > 0:   # choices are scored on these (losa-eval --holdout), never trained on
        _, held_out = holdout_of(ann, train_subset, tcfg.holdout, tcfg.holdout_seed)
    train_ann = ann.exclude(held_out)
    seed_everything(tcfg.seed)  # identical initial weights on every rank
    device = dist.device
    model = TALModel(mcfg).to(device)
    ema = make_ema(model, tcfg.ema_decay) if tcfg.ema_decay > 0 else None
    dataset = StoreDataset(
        reader, train_ann, train_subset, mcfg.required_layers, tcfg.max_seq_len, tcfg.trunc_thresh,
        tcfg.crop_ratio, training=True, seed=tcfg.seed, allow_missing=allow_missing,
        cache=tcfg.cache_features, resample_steps=tcfg.resample_steps, class_agnostic=tcfg.class_agnostic,
        mean_layers=mcfg.mean_layers, cache_max_mb=tcfg.cache_max_mb, features=mcfg.required_features,
    )
    sampler = DistributedSampler(dataset, num_replicas=dist.world, rank=dist.rank, shuffle=True, seed=tcfg.seed)
    loader = DataLoader(
        dataset, batch_size=tcfg.batch_size, sampler=sampler, num_workers=tcfg.num_workers,
        collate_fn=Collate(model.head.strides[-1]), pin_memory=device.type == "cuda",
    )
    per_epoch = len(loader)
    # scale 1: the two groups of before (a checkpoint's optimiser state keeps loading on resume)
    adapter_lr = tcfg.lr * tcfg.adapter_lr_scale if tcfg.adapter_lr_scale != 1.0 else None
    optimizer = torch.optim.AdamW(model.param_groups(tcfg.weight_decay, adapter_lr), lr=tcfg.lr,
                                  fused=fused_adamw(tcfg.fused_optimizer, device) or None)
    schedule = WarmupCosine(tcfg.warmup_epochs * per_epoch, tcfg.epochs * per_epoch, tcfg.schedule,
                            tcfg.min_lr_ratio)
    # a plain function is not serialised by LambdaLR, so a resumed run follows its own (maybe longer) schedule
    scheduler = torch.optim.lr_scheduler.LambdaLR(optimizer, lambda it: schedule(it))
    cast_dtype = amp_dtype(tcfg.amp, device)
    scaler = torch.amp.GradScaler(device.type, enabled=cast_dtype == torch.float16)
    start_epoch, iteration, history = 0, 0, []
    if ckpt is not None:
        model.load_state_dict(ckpt["model"])
        if ema is not None:
            ema.module.load_state_dict(ckpt["ema"])
        optimizer.load_state_dict(ckpt["optimizer"])
        scheduler.load_state_dict(ckpt["scheduler"])
        scaler.load_state_dict(ckpt["scaler"])
        start_epoch, iteration, history = int(ckpt["epoch"]), int(ckpt["iteration"]), list(ckpt["history"])
        set_rng_state(ckpt["rng"])
        del ckpt
    info = {
        "store": str(Path(getattr(reader, "path", store_path)).resolve()),
        "store_provenance": reader.provenance,
        "checkpoint": _checkpoint_path(reader),
        "annotations": getattr(ann, "source", "") or str(annotations),
        "classes": list(dataset.classes),           # what the model predicts (["action"] if class-agnostic)
        "dataset_classes": list(ann.classes),       # the annotations' classes (fusion labels with them)
        "train_subset": train_subset,
        "holdout_videos": held_out,
        "val_subset": val_subset,
        "model_cfg": mcfg.to_dict(),
        "train_cfg": tcfg.to_dict(),
        "world_size": dist.world,
    }
    if dist.main:
        run_dir.mkdir(parents=True, exist_ok=True)
        write_run_info(run_dir, info)
    net: torch.nn.Module = model
    if dist.world > 1:
        ids = [device.index] if device.type == "cuda" else None
        net = torch.nn.parallel.DistributedDataParallel(model, device_ids=ids)
    if dist.main:
        log.info("training %s: %d videos, %d iterations/epoch, parameters %s", mcfg.mode, len(dataset), per_epoch,
                 model.count_parameters())

    def save_checkpoint(epoch: int) -> None:
        state = {
            "format": CHECKPOINT_FORMAT, "epoch": epoch, "iteration": iteration, "history": history,
            "model": model.state_dict(), "ema": ema.module.state_dict() if ema is not None else None,
            "optimizer": optimizer.state_dict(), "scheduler": scheduler.state_dict(),
            "scaler": scaler.state_dict(), "rng": rng_state(), "model_cfg": mcfg.to_dict(),
            "train_cfg": tcfg.to_dict(), "classes": list(ann.classes),
            "store_provenance": reader.provenance,
        }
        atomic_write(ckpt_path, lambda fh: torch.save(state, fh))

    eval_model = ema.module if ema is not None else model
    curves = CurveLog(run_dir, history) if dist.main else None  # replays a resumed run's epochs
    for epoch in range(start_epoch, tcfg.epochs):
        t_start = time.perf_counter()
        sampler.set_epoch(epoch)
        dataset.set_epoch(epoch)
        torch.manual_seed(epoch_seed(tcfg.seed, epoch, dist.rank))
        model.train()
        sums = [0.0, 0.0, 0.0, 0.0]
        bar = tqdm(loader, desc=f"epoch {epoch + 1}/{tcfg.epochs}", leave=False,
                   disable=not (progress and dist.main))
        for it, batch in enumerate(bar):
            feats = {k: v.to(device, non_blocking=True) for k, v in batch["feats"].items()}
            mask = batch["mask"].to(device, non_blocking=True)
            with autocast_context(device, cast_dtype):
                out = net(feats, mask)
                losses = model.loss(out, batch["targets"])
            loss = losses["final_loss"]
            finite = dist.all_sum([float(torch.isfinite(loss.detach()).all())])[0] == dist.world
            if not finite:
                raise NonFiniteLossError(
                    f"non-finite loss at epoch {epoch + 1} iteration {it + 1} (global {iteration + 1}); "
                    f"kept the last good checkpoint {ckpt_path if ckpt_path.exists() else '(none yet)'}")
            optimizer.zero_grad(set_to_none=True)
            scaler.scale(loss).backward()
            if tcfg.clip_grad > 0:
                scaler.unscale_(optimizer)
                norm = torch.nn.utils.clip_grad_norm_(model.parameters(), tcfg.clip_grad)
                if not scaler.is_enabled() and not torch.isfinite(norm):
                    raise NonFiniteLossError(
                        f"non-finite gradient at epoch {epoch + 1} iteration {it + 1} (global {iteration + 1}); "
                        f"kept the last good checkpoint {ckpt_path if ckpt_path.exists() else '(none yet)'}")
            scaler.step(optimizer)
            scaler.update()
            scheduler.step()
            iteration += 1
            if ema is not None:
                ema.update(model)
            values = [float(losses[k].detach()) for k in ("final_loss", "cls_loss", "reg_loss")]
            sums = [s + v for s, v in zip(sums, [*values, 1.0])]
            bar.set_postfix(loss=f"{values[0]:.4f}", lr=f"{optimizer.param_groups[0]['lr']:.2e}")
        total = dist.all_sum(sums)
        count = max(total[3], 1.0)
        row: dict[str, Any] = {
            "epoch": epoch + 1, "iterations": iteration, "loss": total[0] / count,
            "cls_loss": total[1] / count, "reg_loss": total[2] / count,
            "lr": optimizer.param_groups[0]["lr"], "seconds": round(time.perf_counter() - t_start, 3),
        }
        last = epoch + 1 == tcfg.epochs
        if val_subset and (last or (tcfg.eval_every and (epoch + 1) % tcfg.eval_every == 0)):
            if dist.main:
                row.update(_validate(eval_model, reader, ann, val_subset, tcfg, device, allow_missing))
            dist.barrier()
        history.append(row)
        if dist.main:
            log.info("epoch %d: %s", epoch + 1, {k: v for k, v in row.items() if k != "epoch"})
            if last or (epoch + 1) % tcfg.checkpoint_every == 0:
                save_checkpoint(epoch + 1)
            write_metrics_csv(run_dir, history)
            curves.log(row)
    if dist.main:
        curves.close()
        save_model_file(run_dir / MODEL_FILE, eval_model, info)
    dist.barrier()
    summary = {**info, "epochs_done": len(history), "iterations": iteration, "history": history,
               "final": history[-1] if history else {}, "run_dir": str(run_dir)}
    return TrainResult(run_dir, summary, model, ema.module if ema is not None else None)


def _validate(model: TALModel, reader: Any, ann: Annotations, subset: str, tcfg: TrainConfig,
              device: torch.device, allow_missing: bool) -> dict[str, float]:
    """Validation mAP of ``model`` (EMA weights) on ``subset``."""
    from losa.metrics.detection import parse_tious
    from stages.evaluate.run import evaluate_files

    stored = set(reader.videos())
    ids = [v for v in ann.videos_in(subset) if v in stored or not allow_missing]
    if tcfg.class_agnostic:  # validation mAP of a class-agnostic run: every ground truth is "action"
        from stages.infer.fusion import agnostic_annotations

        ann = agnostic_annotations(ann)
    results = predict_store(model, reader, ids, tcfg.eval_batch_size, device=device, nms=tcfg.nms.to_dict(),
                            classes=ann.classes, resample_steps=tcfg.resample_steps)
    tious = parse_tious(tcfg.eval_tious)
    sub_ann = ann.exclude(set(ann.videos) - set(ids))  # videos skipped with allow_missing
    metrics = evaluate_files(results, sub_ann, subset, tious)
    out = {"val_mAP": float(metrics["average_mAP"])}
    out.update({f"val_mAP@{t:g}": float(m) for t, m in zip(tious, metrics["mAP"])})
    return out


def save_model_file(path: Path, model: TALModel, info: Mapping[str, Any]) -> None:
    """Write the final weights with everything needed to use them (``model.pt``)."""
    write_model_file(path, model.state_dict(), info)
