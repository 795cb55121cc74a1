"""Training-epoch benchmark: this project's training loop (head-only, LoSA) vs the official
ActionFormer code on the same features and head settings, interleaved.

One synthetic store (``make_synthetic_store``: tapped layers + the last one, one cell per step) is
the input of both sides. This project trains with `stages.train.run.train` (its real loop: store
dataset with the RAM cache, random crops, AdamW, warm-up cosine, gradient clipping, EMA); each
epoch's time is the ``seconds`` it records. ActionFormer trains its ``LocPointTransformer`` with its
own ``train_one_epoch``, ``make_optimizer``, ``make_scheduler``, ``ModelEma`` and ``truncate_feats``
(imported at run time from the checkout given, never part of this project) on the last layer of
the same store, read into memory once (no disk reads on its side). Both use the same head sizes,
window, regression ranges, batch size, training window, crop ratio and thread count.

Every round trains each side for ``epochs`` epochs (order reversed on odd rounds); the first epoch
of every run is dropped (warm-up: caches, allocator); the figure is the median of the others.
"""
from __future__ import annotations

import contextlib
import io
import statistics
import sys
import tempfile
import time
from collections.abc import Callable, Mapping, Sequence
from pathlib import Path
from typing import Any

import torch

from stages.demo.synthetic_store import make_synthetic_store
from stages.errors import StageError

__all__ = ["DEFAULT_HEAD", "HEADS", "bench_epoch", "to_markdown"]

#: head sizes given to both sides: the demo's, and ActionFormer's THUMOS14 recipe
HEADS: dict[str, dict[str, Any]] = {
    "demo": {"embd_dim": 128, "fpn_dim": 128, "head_dim": 128, "n_levels": 5, "window": 9,
             "regression_ranges": [[0, 4], [4, 8], [8, 16], [16, 32], [32, 10000]]},
    "thumos": {"embd_dim": 512, "fpn_dim": 512, "head_dim": 512, "n_levels": 6, "window": 19,
               "regression_ranges": [[0, 4], [4, 8], [8, 16], [16, 32], [32, 64], [64, 10000]]},
}
DEFAULT_HEAD = HEADS["demo"]


def _import_actionformer(path: str | Path) -> dict[str, Any]:
    root = Path(path)
    if not (root / "libs" / "modeling" / "meta_archs.py").is_file():
        raise StageError(f"--actionformer {path}: not an ActionFormer checkout (no libs/modeling/meta_archs.py)")
    for p in (str(root), str(root / "libs" / "utils")):
        if p not in sys.path:
            sys.path.insert(0, p)
    try:
        from libs.core.config import _update_config, load_default_config
        from libs.datasets.data_utils import trivial_batch_collator, truncate_feats
        from libs.modeling import make_meta_arch
        from libs.utils.train_utils import (
            ModelEma,
            make_optimizer,
            make_scheduler,
            train_one_epoch,
        )
    except ImportError as exc:
        raise StageError(f"--actionformer {path}: cannot import its training code ({exc}); build "
                         f"libs/utils (python setup.py build_ext --inplace) in that checkout") from None
    return {"_update_config": _update_config, "load_default_config": load_default_config,
            "trivial_batch_collator": trivial_batch_collator, "truncate_feats": truncate_feats,
            "make_meta_arch": make_meta_arch, "ModelEma": ModelEma, "make_optimizer": make_optimizer,
            "make_scheduler": make_scheduler, "train_one_epoch": train_one_epoch}


class _AFDataset(torch.utils.data.Dataset):
    """ActionFormer-format training items (``feats [C, T]``, segments in steps) from memory, cropped
    with ActionFormer's own ``truncate_feats`` as its THUMOS dataset does."""

    def __init__(self, items: list[dict], truncate: Callable, max_seq_len: int, trunc_thresh: float,
                 crop_ratio: Sequence[float] | None) -> None:
        self.items, self.truncate = items, truncate
        self.max_seq_len, self.trunc_thresh, self.crop_ratio = max_seq_len, trunc_thresh, crop_ratio

    def __len__(self) -> int:
        return len(self.items)

    def __getitem__(self, i: int) -> dict:
        return self.truncate(dict(self.items[i]), self.max_seq_len, self.trunc_thresh, 0.0,
                             list(self.crop_ratio) if self.crop_ratio else None)


def _actionformer_runner(af: Mapping[str, Any], store: str, annotations: str, last: int, classes: int,
                         head: Mapping[str, Any], tcfg: Mapping[str, Any]) -> Callable[[int], list[float]]:
    from stages.data.annotations import load_annotations
    from stages.data.dataset import StoreDataset
    from storage import open_store

    reader, ann = open_store(store), load_annotations(annotations)
    whole = StoreDataset(reader, ann, "training", [last], max_seq_len=10**9, crop_ratio=None, mean_layers=[last])
    items = []
    for k in range(len(whole)):
        it = whole[k]
        items.append({"video_id": it["video_id"], "feats": it["feats"][last][:, 0].T.contiguous().float(),
                      "segments": it["segments"], "labels": it["labels"], "fps": 30.0,
                      "duration": it["num_steps"] * 4 / 30.0, "feat_stride": 4, "feat_num_frames": 16})
    channels = int(items[0]["feats"].shape[0])
    levels = int(head["n_levels"])
    cfg = af["load_default_config"]()
    cfg["dataset"].update(num_classes=classes, input_dim=channels, max_seq_len=tcfg["max_seq_len"],
                          feat_stride=4, num_frames=16, trunc_thresh=tcfg["trunc_thresh"],
                          crop_ratio=list(tcfg["crop_ratio"]) if tcfg["crop_ratio"] else None)
    cfg["model"].update(backbone_arch=(2, 2, levels - 1), regression_range=[list(r) for r in head["regression_ranges"]],
                        n_mha_win_size=head["window"], embd_dim=head["embd_dim"], fpn_dim=head["fpn_dim"],
                        head_dim=head["head_dim"])
    cfg["opt"].update(type="AdamW", learning_rate=tcfg["lr"], weight_decay=tcfg["weight_decay"],
                      epochs=tcfg["epochs"] - tcfg["warmup_epochs"], warmup=True,
                      warmup_epochs=tcfg["warmup_epochs"], schedule_type="cosine")
    cfg["train_cfg"].update(clip_grad_l2norm=tcfg["clip_grad"])
    cfg = af["_update_config"](cfg)
    data = _AFDataset(items, af["truncate_feats"], tcfg["max_seq_len"], tcfg["trunc_thresh"], tcfg["crop_ratio"])

    def run(seed: int) -> list[float]:
        torch.manual_seed(seed)
        try:
            model = af["make_meta_arch"](cfg["model_name"], **cfg["model"])
        except AssertionError as exc:   # e.g. a window not divisible by its stride x attention window
            raise StageError(f"ActionFormer refuses these settings (window {tcfg['max_seq_len']}, head {dict(head)}): "
                             f"{exc}") from None
        optimizer = af["make_optimizer"](model, cfg["opt"])
        loader = torch.utils.data.DataLoader(data, batch_size=tcfg["batch_size"], shuffle=True, drop_last=True,
                                             num_workers=0, collate_fn=af["trivial_batch_collator"])
        scheduler = af["make_scheduler"](optimizer, cfg["opt"], len(loader))
        ema = af["ModelEma"](model, decay=tcfg["ema_decay"], device=torch.device("cpu"))
        seconds = []
        for epoch in range(tcfg["epochs"]):
            t0 = time.perf_counter()
            with contextlib.redirect_stdout(io.StringIO()):   # its per-epoch banner
                af["train_one_epoch"](loader, model, optimizer, scheduler, epoch, model_ema=ema,
                                      clip_grad_l2norm=tcfg["clip_grad"], print_freq=10**9)
            seconds.append(time.perf_counter() - t0)
        return seconds

    return run


def bench_epoch(actionformer: str | Path | None = None, *, num_videos: int = 16, num_steps: int = 384,
                max_seq_len: int = 256, channels: int = 256, taps: Sequence[int] = (2, 4, 6), last: int | None = None,
                classes: int = 5, batch_size: int = 2, epochs: int = 3, rounds: int = 2,
                modes: Sequence[str] = ("head-only", "losa"), head: Mapping[str, Any] | None = None,
                threads: int | None = 1, seed: int = 0, workdir: str | Path | None = None,
                progress: Callable[[str], None] | None = None) -> dict[str, Any]:
    """Time training epochs (module docstring); returns a JSON-able dict with a ``"markdown"`` report."""
    from stages.train.run import train

    if min(num_videos, num_steps, max_seq_len, batch_size, rounds) < 1 or epochs < 2:
        raise StageError("videos, steps, max_seq_len, batch_size and rounds must be >= 1, epochs >= 2 "
                         "(the first epoch of each run is dropped)")
    if num_videos < batch_size:
        raise StageError(f"--videos {num_videos} must be >= --batch-size {batch_size}")
    say = progress or (lambda _m: None)
    if threads:
        torch.set_num_threads(threads)
    head = dict(head or DEFAULT_HEAD)
    af = _import_actionformer(actionformer) if actionformer is not None else None
    layers = sorted({*map(int, taps)})
    last = int(last) if last is not None else layers[-1] + 2
    if last <= layers[-1]:
        raise StageError(f"the last layer ({last}) must come after the taps {layers}")
    tcfg = {"epochs": epochs, "batch_size": batch_size, "max_seq_len": max_seq_len, "lr": 1e-4,
            "weight_decay": 0.05, "warmup_epochs": 1, "clip_grad": 1.0, "ema_decay": 0.999,
            "trunc_thresh": 0.5, "crop_ratio": (0.9, 1.0)}
    times: dict[str, list[float]] = {}
    with tempfile.TemporaryDirectory(dir=workdir) as tmp:
        say(f"writing a synthetic store ({num_videos} x {num_steps} steps, C={channels}, layers {layers + [last]})")
        data = make_synthetic_store(Path(tmp) / "bench.zarr", num_videos=num_videos, num_steps=num_steps,
                                    channels=channels, layers=[*layers, last], num_classes=classes, seed=seed,
                                    action_len=(4, max(8, max_seq_len // 4)))
        store, annotations = str(data.store), str(data.annotations)
        ours_head = {**head, "max_seq_len": max_seq_len, "dropout": 0.0}
        counter = iter(range(10**6))

        def ours(mode: str) -> Callable[[int], list[float]]:
            mcfg = {"mode": mode, "head": ours_head}
            if mode != "head-only":
                mcfg["tapped_layers"] = layers

            def run(run_seed: int) -> list[float]:
                res = train(store, annotations, Path(tmp) / f"run{next(counter)}", mcfg,
                            {**tcfg, "seed": run_seed, "device": "cpu", "amp": "off",
                             "checkpoint_every": 10**6}, progress=False, allow_partial_classes=True)
                return [float(r["seconds"]) for r in res.summary["history"]]
            return run

        runners = {mode: ours(mode) for mode in modes}
        if af is not None:
            runners["actionformer"] = _actionformer_runner(af, store, annotations, last, classes, head, tcfg)
        names = list(runners)
        for r in range(rounds):
            for name in (names if r % 2 == 0 else names[::-1]):
                say(f"round {r + 1}/{rounds}: {name}, {epochs} epochs")
                times.setdefault(name, []).extend(runners[name](seed + r)[1:])
    med = {k: statistics.median(v) for k, v in times.items()}
    ratios = {}
    if "head-only" in med and "losa" in med:
        ratios["losa_over_head_only"] = med["losa"] / med["head-only"]
    if "head-only" in med and "actionformer" in med:
        ratios["head_only_over_actionformer"] = med["head-only"] / med["actionformer"]
    res: dict[str, Any] = {
        "threads": torch.get_num_threads(), "videos": num_videos, "steps": num_steps, "max_seq_len": max_seq_len,
        "channels": channels, "taps": layers, "classes": classes, "batch_size": batch_size, "epochs": epochs,
        "rounds": rounds, "head": head, "epoch_s": med, "epoch_s_all": times, "ratios": ratios,
    }
    limits = {"head_only_le_0.6x_actionformer": ("head_only_over_actionformer", 0.6),
              "losa_le_2x_head_only": ("losa_over_head_only", 2.0)}
    res["targets"] = {k: bool(ratios[r] <= lim) for k, (r, lim) in limits.items() if r in ratios}
    res["markdown"] = to_markdown(res)
    return res


def to_markdown(res: Mapping[str, Any]) -> str:
    """Markdown table of a `bench_epoch` result."""
    h = res["head"]
    lines = [
        f"## Training epoch: this project vs ActionFormer ({res['threads']} threads, CPU)",
        "",
        (f"{res['videos']} videos x {res['steps']} steps, C={res['channels']}, window {res['max_seq_len']}, "
         f"batch {res['batch_size']}, head {h['embd_dim']} wide, {h['n_levels']} levels, window {h['window']}; "
         f"median of {res['rounds']} interleaved rounds x {res['epochs'] - 1} epochs (first epoch dropped)"),
        "",
        "| trainer | epoch s | epochs timed |",
        "|---|---:|---:|",
    ]
    for name, s in res["epoch_s"].items():
        lines.append(f"| {name} | {s:.3f} | {len(res['epoch_s_all'][name])} |")
    if res["ratios"]:
        lines += ["", *(f"- {k.replace('_', ' ')} = **{v:.2f}**" for k, v in res["ratios"].items())]
    return "\n".join(lines) + "\n"
