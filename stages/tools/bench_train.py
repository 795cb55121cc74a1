"""Training benchmark: cost of one optimisation step when features come from the store, per model
mode, and against running the frozen backbone on the fly.

Part 1 (per mode: head-only, side, losa): a synthetic store with the backbone's shapes (ViT-g:
C=1408, taps [8, 16, 24, 32] + 40, 2304 steps per video) is read through the training dataset; one
step = read + collate + host→device copy ("read") then forward + loss + backward + AdamW ("compute").
Peak memory: ``torch.cuda.max_memory_allocated`` on CUDA; on CPU the peak resident-set growth over
the pre-model baseline, sampled every 2 ms from ``/proc/self/statm`` (ru_maxrss elsewhere), with
every mode timed in a fresh process.

Part 2 (on the fly vs store, losa mode): the frozen backbone (default ViT-g on CUDA, ViT-S on CPU)
runs forward-only on ``onfly_clips`` random clips (no decoding, which favours on-the-fly); its time
per clip is extrapolated LINEARLY to one clip per step, ``num_steps × batch_size`` clips per training
step. on-the-fly step = extrapolated backbone time + the same compute; store step = read + compute.
"""
from __future__ import annotations

import json
import multiprocessing
import os
import tempfile
import threading
import time
from concurrent.futures import ProcessPoolExecutor
from pathlib import Path
from typing import Any, Callable, Mapping, Sequence

import numpy as np
import torch

from losa.encoder.backbone import build_backbone, get_preset
from losa.model import TALModel
from losa.encoder.sampling import normalise
from losa.encoder.tokens import pool_tokens
from stages.data.annotations import load_annotations
from stages.data.dataset import Collate, StoreDataset
from stages.extract.config import default_layers
from stages.train.schedule import fused_adamw
from stages.demo.synthetic_store import make_synthetic_store
from stages.infer.predict import model_config_from_store
from stages.runtime import amp_dtype, autocast_context, resolve_device
from storage import open_store
from stages.errors import StageError

__all__ = ["bench_train", "to_markdown", "write_report"]


class _PeakRSS:
    """Samples the process RSS in a thread; ``peak`` is the maximum seen (bytes)."""

    def __init__(self, interval: float = 0.002) -> None:
        self.interval, self.peak, self._stop = interval, 0, threading.Event()
        self._page = os.sysconf("SC_PAGE_SIZE") if hasattr(os, "sysconf") else 4096

    def rss(self) -> int:
        try:
            with open("/proc/self/statm") as fh:
                return int(fh.read().split()[1]) * self._page
        except OSError:
            import resource

            return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * 1024

    def _run(self) -> None:
        while not self._stop.is_set():
            self.peak = max(self.peak, self.rss())
            time.sleep(self.interval)

    def __enter__(self) -> _PeakRSS:
        self.peak = self.rss()
        self._thread = threading.Thread(target=self._run, daemon=True)
        self._thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self._stop.set()
        self._thread.join()
        self.peak = max(self.peak, self.rss())


def _sync(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize(device)


def _time_mode(store: str, annotations: str, mode: str, overrides: Mapping[str, Any], batch_size: int,
               num_steps: int, iters: int, warmup: int, device: torch.device, amp: str,
               threads: int | None = None) -> dict[str, Any]:
    """Median read / compute seconds of one training step and the peak memory, for one mode."""
    if threads:
        torch.set_num_threads(threads)
    reader, ann = open_store(store), load_annotations(annotations)
    torch.manual_seed(0)
    cfg = model_config_from_store(reader, {**overrides, "mode": mode}, len(ann.classes))
    ds = StoreDataset(reader, ann, None, cfg.required_layers, max_seq_len=num_steps, crop_ratio=None,
                      mean_layers=cfg.mean_layers)  # read from the store every step (no RAM cache)
    rss = _PeakRSS()
    base = rss.rss()
    if device.type == "cuda":
        torch.cuda.empty_cache()
        torch.cuda.reset_peak_memory_stats(device)
    model = TALModel(cfg).to(device).train()
    opt = torch.optim.AdamW(model.param_groups(0.05), lr=1e-4, fused=fused_adamw(True, device) or None)
    collate = Collate(model.head.strides[-1])
    dtype = amp_dtype(amp, device)
    reads, computes = [], []
    with rss:
        for i in range(warmup + iters):
            idx = [(i * batch_size + j) % len(ds) for j in range(batch_size)]
            _sync(device)
            t0 = time.perf_counter()
            batch = collate([ds[k] for k in idx])
            feats = {k: v.to(device) for k, v in batch["feats"].items()}
            mask = batch["mask"].to(device)
            _sync(device)
            t1 = time.perf_counter()
            with autocast_context(device, dtype):
                loss = model.loss(model(feats, mask), batch["targets"])["final_loss"]
            opt.zero_grad(set_to_none=True)
            loss.backward()
            torch.nn.utils.clip_grad_norm_(model.parameters(), 1.0)
            opt.step()
            _sync(device)
            if i >= warmup:
                reads.append(t1 - t0)
                computes.append(time.perf_counter() - t1)
    peak = torch.cuda.max_memory_allocated(device) if device.type == "cuda" else rss.peak - base
    read_s, compute_s = float(np.median(reads)), float(np.median(computes))
    return {"mode": mode, "params": model.count_parameters()["total"], "read_s": read_s,
            "compute_s": compute_s, "step_s": read_s + compute_s, "peak_mem_mb": peak / 2**20}


def _time_backbone(preset: str, layers: Sequence[int], clips: int, resolution: int, iters: int,
                   device: torch.device, amp: str) -> dict[str, Any]:
    """Seconds per clip of the frozen backbone (normalise + forward to the last tapped block + pool)."""
    model = build_backbone(preset, num_frames=16, img_size=resolution).to(device).eval()
    gen = torch.Generator().manual_seed(0)
    frames = torch.randint(0, 256, (clips, 16, resolution, resolution, 3), dtype=torch.uint8, generator=gen)
    frames = frames.to(device)
    dtype = amp_dtype(amp, device)
    if device.type == "cuda":
        torch.cuda.reset_peak_memory_stats(device)
    times = []
    with torch.no_grad():
        for i in range(1 + iters):
            _sync(device)
            t0 = time.perf_counter()
            with autocast_context(device, dtype):
                out = model.forward_layers(normalise(frames, "imagenet"), layers)
                feats = {k: pool_tokens(v, 1, "pool") for k, v in out.items()}
            del feats
            _sync(device)
            if i > 0:
                times.append(time.perf_counter() - t0)
    peak = torch.cuda.max_memory_allocated(device) / 2**20 if device.type == "cuda" else None
    return {"backbone": preset, "clips": clips, "resolution": resolution,
            "seconds_per_clip": float(np.median(times)) / clips, "peak_mem_mb": peak}


def bench_train(
    preset: str = "vit-g",
    num_steps: int = 2304,
    num_videos: int = 2,
    batch_size: int = 1,
    iters: int = 3,
    warmup: int = 1,
    modes: Sequence[str] = ("head-only", "side", "losa"),
    backbone: str | None = None,
    onfly_clips: int | None = None,
    resolution: int = 224,
    device: str = "auto",
    amp: str = "auto",
    model_overrides: Mapping[str, Any] | None = None,
    workdir: str | Path | None = None,
    progress: Callable[[str], None] | None = None,
    isolate: bool | None = None,
) -> dict[str, Any]:
    """Run both parts (module docstring); returns a JSON-able dict with a ``"markdown"`` report.

    ``isolate`` (default: on CPU) times every mode in a fresh process, so that memory freed by one
    mode but kept by the C allocator cannot hide the next mode's peak.
    """
    if num_steps < 1 or num_videos < 1 or batch_size < 1 or iters < 1 or warmup < 0:
        raise StageError("num_steps, num_videos, batch_size and iters must be >= 1 (warmup >= 0)")
    dev = resolve_device(device)
    isolate = dev.type != "cuda" if isolate is None else isolate
    say = progress or (lambda _msg: None)
    overrides = dict(model_overrides or {})
    bb_name = backbone or ("vit-g" if dev.type == "cuda" else "vit-s")
    clips = onfly_clips or (32 if dev.type == "cuda" else 4)
    with tempfile.TemporaryDirectory(dir=workdir) as tmp:

        def store_for(name: str) -> tuple[str, str, list[int], int]:
            cfg = get_preset(name)
            layers = [*default_layers(cfg.depth), cfg.depth]
            say(f"writing a synthetic {name}-shaped store ({num_videos} x {num_steps} steps, C={cfg.embed_dim})")
            data = make_synthetic_store(Path(tmp) / f"{name}.zarr", num_videos=num_videos, num_steps=num_steps,
                                        channels=cfg.embed_dim, layers=layers, num_classes=20, seed=0)
            return str(data.store), str(data.annotations), layers, cfg.embed_dim

        def time_mode(store: str, annotations: str, mode: str) -> dict[str, Any]:
            say(f"timing {mode} ({'fresh process' if isolate else 'in process'})")
            args = (store, annotations, mode, overrides, batch_size, num_steps, iters, warmup, dev, amp,
                    torch.get_num_threads())
            if not isolate:
                return _time_mode(*args)
            ctx = multiprocessing.get_context("spawn")
            with ProcessPoolExecutor(max_workers=1, mp_context=ctx) as pool:
                return pool.submit(_time_mode, *args).result()

        store, annotations, layers, channels = store_for(preset)
        rows = [time_mode(store, annotations, mode) for mode in modes]
        losa_rows = [r for r in rows if r["mode"] == "losa"]
        if bb_name == preset and losa_rows:
            store_row, bb_layers = losa_rows[0], layers
        else:
            store2, annotations2, bb_layers, _ = store_for(bb_name)
            store_row = time_mode(store2, annotations2, "losa")
        say(f"timing the {bb_name} backbone on {clips} clips")
        bb = _time_backbone(bb_name, bb_layers, clips, resolution, iters, dev, amp)
    total_clips = num_steps * batch_size
    onfly_s = bb["seconds_per_clip"] * total_clips + store_row["compute_s"]
    result = {
        "device": torch.cuda.get_device_name(dev) if dev.type == "cuda" else "cpu",
        "torch_threads": torch.get_num_threads(),
        "amp": str(amp_dtype(amp, dev) or "fp32").replace("torch.", ""),
        "preset": preset, "channels": channels, "layers": layers, "num_steps": num_steps,
        "batch_size": batch_size, "iters": iters,
        "memory": "max_memory_allocated" if dev.type == "cuda" else "peak RSS growth (sampled)",
        "modes": rows,
        "onfly": {
            **bb, "layers": bb_layers, "extrapolated_clips": total_clips,
            "backbone_s": bb["seconds_per_clip"] * total_clips, "onfly_step_s": onfly_s,
            "store_step_s": store_row["step_s"], "ratio": onfly_s / store_row["step_s"],
            "note": (f"backbone forward timed on {clips} clip(s) and extrapolated linearly to {total_clips} "
                     "clips (one per step); decoding not included"),
        },
    }
    result["markdown"] = to_markdown(result)
    return result


def to_markdown(res: Mapping[str, Any]) -> str:
    """Markdown tables of a `bench_train` result."""
    o = res["onfly"]
    lines = [
        f"## Training benchmark on {res['device']} ({res['amp']}, {res['torch_threads']} threads)",
        "",
        f"{res['preset']} shapes: C={res['channels']}, layers {res['layers']}, {res['num_steps']} steps per video, "
        f"batch {res['batch_size']}, median of {res['iters']} steps; memory = {res['memory']}",
        "",
        "| mode | trainable params | read s | compute s | step s | peak MiB |",
        "|---|---:|---:|---:|---:|---:|",
    ]
    for r in res["modes"]:
        lines.append(f"| {r['mode']} | {r['params']:,} | {r['read_s']:.3f} | {r['compute_s']:.3f} | "
                     f"{r['step_s']:.3f} | {r['peak_mem_mb']:.0f} |")
    lines += [
        "",
        f"### On-the-fly {o['backbone']} backbone vs reading the store (losa step)",
        "",
        "| | seconds per step |",
        "|---|---:|",
        f"| backbone forward ({o['extrapolated_clips']} clips at {o['resolution']}², "
        f"{o['seconds_per_clip'] * 1e3:.1f} ms/clip) | {o['backbone_s']:.2f} |",
        f"| on-the-fly step (backbone + compute) | {o['onfly_step_s']:.2f} |",
        f"| store step (read + compute) | {o['store_step_s']:.3f} |",
        "",
        f"on-the-fly / store = **{o['ratio']:.1f}x**. Note: {o['note']}.",
    ]
    return "\n".join(lines) + "\n"


def write_report(res: Mapping[str, Any], out: str | Path) -> None:
    """Write the result as JSON (.json) or markdown (.md)."""
    out = Path(out)
    if out.suffix.lower() == ".json":
        out.write_text(json.dumps({k: v for k, v in res.items() if k != "markdown"}, indent=1) + "\n",
                       encoding="utf-8")
    elif out.suffix.lower() in (".md", ".markdown"):
        out.write_text(res.get("markdown") or to_markdown(res), encoding="utf-8")
    else:
        raise StageError(f"--out {out}: use a .json or .md file name")
