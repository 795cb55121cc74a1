"""GPU check in one command (`losa-bench gpu`): the numbers a new accelerator must show, in one JSON.

With random weights (no checkpoint to download) and on one device, it measures:

1. **extraction**, ViT-g bf16 (store dtype bfloat16): decode-only, backbone-only and full clips/s on
   the same synthetic (or given) videos, achieved TFLOP/s and, given ``peak_tflops``, the MFU, and
   full / backbone-only (`stages.tools.bench_extract`); optionally the same backbone under
   ``torch.compile`` (each block compiled);
2. the **fp32 reference recipe** (VideoMAEv2's released TAD features: /255 only, squash resize, fp32,
   batch 1, forward through every block): backbone-only clips/s;
3. **training** at THUMOS shapes: one optimisation step (read + forward + loss + backward + AdamW) of
   LoSA (4 taps + last, C = 1408, 2304 steps) and the head-only baseline, and LoSA on stores made by
   encoders of depth 12 / 24 / 40 at the same width — the step time and the peak device memory must not
   grow with the encoder's depth (the backbone is frozen and cached: only the 5 stored layers reach
   the model);
4. the **SDPA backend** PyTorch picks for the backbone's attention shape and precision
   (``torch._fused_sdp_choice``: flash, efficient (memory-efficient), cudnn or math).

``tiny=True`` shrinks every shape (tiny backbone, 32² clips of 4 frames, 64 steps, width 96, depths
2 / 3 / 4) so the whole path runs on a CPU in seconds (the test does this).
"""
from __future__ import annotations

import json
import platform
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Callable, Sequence

import torch
from stages.errors import StageError

__all__ = ["GpuCheckSpec", "bench_gpu", "sdpa_backend", "to_markdown"]


@dataclass
class GpuCheckSpec:
    """Shapes of the GPU check (defaults: the THUMOS / ViT-g setting)."""

    preset: str = "vit-g"
    resolution: int = 224
    frames: int = 16
    clip_stride: int = 4
    batch_clips: int = 32
    videos: int = 4
    seconds: float = 20.0
    video_size: int | None = None
    reference_clips: int = 8  # fp32 batch-1 clips timed
    num_steps: int = 2304
    channels: int = 1408
    depths: tuple[int, ...] = (12, 24, 40)
    train_batch: int = 2
    train_iters: int = 5
    taps: int = 4
    model: dict = field(default_factory=dict)  # LoSAConfig overrides of the training part

    @classmethod
    def tiny(cls) -> GpuCheckSpec:
        head = {"embd_dim": 32, "fpn_dim": 32, "head_dim": 32, "n_levels": 3, "window": 5,
                "regression_ranges": [[0, 4], [4, 8], [8, 10000]]}
        return cls(preset="tiny", resolution=32, frames=4, clip_stride=2, batch_clips=8, videos=1,
                   seconds=1.5, video_size=40, reference_clips=2, num_steps=64, channels=96,
                   depths=(5, 6, 8), train_batch=1, train_iters=2, model={"head": head})


def sdpa_backend(device: torch.device, dtype: torch.dtype, heads: int, tokens: int, head_dim: int) -> str:
    """Name of the scaled-dot-product-attention kernel PyTorch dispatches to for this shape."""
    from torch.nn.attention import SDPBackend

    q = torch.zeros(1, heads, tokens, head_dim, device=device, dtype=dtype)
    try:
        choice = int(torch._fused_sdp_choice(q, q, q))
    except (AttributeError, RuntimeError) as exc:  # private API: say so instead of guessing
        return f"unknown ({type(exc).__name__})"
    names = {int(getattr(SDPBackend, n)): n.lower() for n in dir(SDPBackend) if n.isupper()}
    return names.get(choice, str(choice))


def _extract_cfg(spec: GpuCheckSpec, device: str, **kw: Any):
    from losa.encoder.sampling import ClipSampling
    from stages.extract.config import ExtractConfig, default_layers
    from losa.encoder.backbone import get_preset

    depth = get_preset(spec.preset).depth
    base = dict(preset=spec.preset, layers=default_layers(depth), include_last=True,
                sampling=ClipSampling(spec.frames, 1, spec.clip_stride), resolution=spec.resolution,
                batch_clips=spec.batch_clips, device=device)
    base.update(kw)
    return ExtractConfig(**base)


def _compile_blocks(encoder) -> None:
    for block in encoder.model.blocks:
        block.compile()


def _extraction(spec: GpuCheckSpec, device: str, videos: Path | None, peak: float | None,
                compile: bool, workdir: Path | None) -> dict[str, Any]:
    from stages.tools.bench_extract import bench_extract

    cfg = _extract_cfg(spec, device, precision="bf16", store_dtype="bfloat16")
    res = bench_extract(cfg, videos=videos, num_videos=spec.videos, seconds=spec.seconds,
                        video_size=spec.video_size, peak_tflops=peak, workdir=workdir).to_dict()
    if compile:
        res["compiled"] = bench_extract(cfg, videos=videos, num_videos=spec.videos, seconds=spec.seconds,
                                        video_size=spec.video_size, peak_tflops=peak, workdir=workdir,
                                        prepare=_compile_blocks).to_dict()
    return res


def _reference_fp32(spec: GpuCheckSpec, device: str) -> dict[str, Any]:
    from losa.encoder.backbone import flops_per_clip, get_preset
    from stages.extract.run import ClipEncoder
    from stages.tools.bench_extract import _backbone_rate

    cfg = _extract_cfg(spec, device, precision="fp32", norm="255", resize="squash", layers=[],
                       batch_clips=1, store_dtype="float16")
    encoder = ClipEncoder(cfg)
    rate = _backbone_rate(encoder, cfg, min_clips=spec.reference_clips)
    flops = flops_per_clip(get_preset(spec.preset), spec.frames, spec.resolution)
    return {"recipe": "VideoMAEv2 TAD features: /255, squash, fp32 (no TF32), batch 1, all blocks",
            "precision": encoder.precision, "batch_clips": 1, "backbone_clips_s": rate,
            "achieved_tflops": rate * flops / 1e12}


def _training(spec: GpuCheckSpec, dev: torch.device, workdir: Path, say: Callable[[str], None]) -> list[dict]:
    from stages.demo.synthetic_store import make_synthetic_store
    from stages.extract.config import default_layers
    from stages.tools.bench_train import _time_mode

    rows = []
    runs = [(max(spec.depths), "head-only")] + [(d, "losa") for d in spec.depths]
    stores: dict[int, tuple[str, str, list[int]]] = {}
    for depth, mode in runs:
        if depth not in stores:
            layers = [*default_layers(depth)[: spec.taps], depth]
            data = make_synthetic_store(workdir / f"depth{depth}.zarr", num_videos=2, num_steps=spec.num_steps,
                                        channels=spec.channels, layers=layers, num_classes=20, seed=0)
            stores[depth] = (str(data.store), str(data.annotations), layers)
        store, ann, layers = stores[depth]
        say(f"training step: {mode}, encoder depth {depth}, layers {layers}")
        row = _time_mode(store, ann, mode, spec.model, spec.train_batch, spec.num_steps, spec.train_iters, 1, dev, "auto")
        rows.append({"encoder_depth": depth, "layers": layers, **row})
    return rows


def bench_gpu(
    spec: GpuCheckSpec | None = None,
    device: str = "auto",
    peak_tflops: float | None = None,
    compile: bool = False,
    videos: Path | None = None,
    parts: Sequence[str] = ("extract", "reference", "train"),
    workdir: Path | None = None,
    progress: Callable[[str], None] | None = None,
) -> dict[str, Any]:
    """Run the GPU check (module docstring) and return a JSON-able dict (with a ``"markdown"`` report)."""
    import tempfile

    from losa.encoder.backbone import get_preset
    from stages.runtime import resolve_device

    spec = spec or GpuCheckSpec()
    unknown = sorted(set(parts) - {"extract", "reference", "train"})
    if unknown:
        raise StageError(f"unknown part(s) {', '.join(unknown)}: use extract, reference, train")
    say = progress or (lambda _m: None)
    dev = resolve_device(device)
    bb = get_preset(spec.preset)
    t_all = time.perf_counter()
    grid = bb.grid(spec.frames, spec.resolution)
    att_dtype = torch.bfloat16 if dev.type == "cuda" else torch.float32
    result: dict[str, Any] = {
        "device": torch.cuda.get_device_name(dev) if dev.type == "cuda" else f"cpu ({platform.processor() or 'cpu'})",
        "torch": torch.__version__, "cuda": torch.version.cuda, "torch_threads": torch.get_num_threads(),
        "spec": {k: (list(v) if isinstance(v, tuple) else v) for k, v in spec.__dict__.items()},
        "peak_tflops": peak_tflops, "compile": compile,
        "sdpa_backend": sdpa_backend(dev, att_dtype, bb.num_heads, grid[0] * grid[1] * grid[2],
                                     bb.embed_dim // bb.num_heads),
        "seconds": {},
    }
    with tempfile.TemporaryDirectory(prefix="losa-gpu-", dir=workdir) as tmp:
        tmp = Path(tmp)
        if "extract" in parts:
            say(f"extraction: {spec.preset} bf16 on {result['device']}")
            t0 = time.perf_counter()
            result["extraction"] = _extraction(spec, str(dev), videos, peak_tflops, compile, tmp)
            result["seconds"]["extract"] = time.perf_counter() - t0
        if "reference" in parts:
            say("fp32 reference recipe (batch 1)")
            t0 = time.perf_counter()
            result["reference_fp32"] = _reference_fp32(spec, str(dev))
            result["seconds"]["reference"] = time.perf_counter() - t0
        if "train" in parts:
            t0 = time.perf_counter()
            rows = _training(spec, dev, tmp, say)
            losa = [r for r in rows if r["mode"] == "losa"]
            head = [r for r in rows if r["mode"] == "head-only"]
            mems = [r["peak_mem_mb"] for r in losa]
            result["training"] = {
                "memory": "max_memory_allocated" if dev.type == "cuda" else "peak RSS growth (sampled)",
                "rows": rows,
                "losa_over_head_only": losa[-1]["step_s"] / head[0]["step_s"] if losa and head else None,
                "memory_max_over_min": max(mems) / max(min(mems), 1e-9) if mems else None,
            }
            result["seconds"]["train"] = time.perf_counter() - t0
    result["seconds"]["total"] = time.perf_counter() - t_all
    ext = result.get("extraction")
    result["targets"] = {
        "extraction_mfu_ge_0.5": (ext["mfu"] >= 0.5) if ext and ext.get("mfu") is not None else None,
        "full_over_backbone_ge_0.9": (ext["full_over_backbone"] >= 0.9) if ext else None,
        "train_memory_flat_within_5pct": (result["training"]["memory_max_over_min"] <= 1.05
                                          if "training" in result and dev.type == "cuda" else None),
        "under_8_minutes": result["seconds"]["total"] < 480,
    }
    result["markdown"] = to_markdown(result)
    return result


def to_markdown(res: dict[str, Any]) -> str:
    """A short markdown report of a `bench_gpu` result."""
    lines = [f"## GPU check on {res['device']} (torch {res['torch']}, SDPA: {res['sdpa_backend']})", ""]
    ext = res.get("extraction")
    if ext:
        mfu = f", MFU {100 * ext['mfu']:.1f} %" if ext.get("mfu") is not None else ""
        lines += [
            f"extraction {ext['preset']} {ext['precision']}: decode {ext['decode_clips_s']:.1f}, backbone "
            f"{ext['backbone_clips_s']:.1f}, full {ext['full_clips_s']:.1f} clips/s; full / backbone "
            f"{ext['full_over_backbone']:.2f}; {ext['achieved_tflops']:.1f} TFLOP/s{mfu}",
        ]
        if "compiled" in ext:
            c = ext["compiled"]
            lines.append(f"torch.compile: backbone {c['backbone_clips_s']:.1f}, full {c['full_clips_s']:.1f} clips/s")
    ref = res.get("reference_fp32")
    if ref:
        lines.append(f"fp32 reference recipe: {ref['backbone_clips_s']:.2f} clips/s ({ref['achieved_tflops']:.1f} TFLOP/s)")
    tr = res.get("training")
    if tr:
        lines += ["", f"| mode | encoder depth | layers | step s | peak MiB ({tr['memory']}) |", "|---|---:|---|---:|---:|"]
        for r in tr["rows"]:
            lines.append(f"| {r['mode']} | {r['encoder_depth']} | {r['layers']} | {r['step_s']:.3f} | "
                         f"{r['peak_mem_mb']:.0f} |")
        if tr["losa_over_head_only"] is not None:
            lines.append(f"\nLoSA / head-only step = {tr['losa_over_head_only']:.2f}; "
                         f"memory max / min over depths = {tr['memory_max_over_min']:.2f}")
    lines += ["", f"targets: {json.dumps(res['targets'])}; total {res['seconds']['total']:.0f} s"]
    return "\n".join(lines) + "\n"
