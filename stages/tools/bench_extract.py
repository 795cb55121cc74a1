"""Extraction benchmark: where does the time go — decoding, the backbone, or the pipeline glue?

In one run, on the same videos and the same model, it measures:

1. decode-only clips/s: `iter_frame_batches` over every video (decode + resize + crop);
2. backbone-only clips/s: `ClipEncoder.encode` on random uint8 frames already in memory, batched
   as extraction batches them (convert + gather + forward + pool + cast, incl. the host→device copy);
3. full clips/s: `run_extract` into a temporary store (decode thread + forward + writer thread +
   commit), with the already warmed-up model;

with ``rounds > 1``, 2 and 3 alternate (backbone then full, full then backbone on the next round, a
fresh store each time) and the rates and full/backbone (per round: the pair measured side by side)
are medians, so one slow moment of a shared machine does not decide the ratio.  It reports
full/backbone (1.0 = decoding and writing are completely hidden behind compute),
achieved TFLOP/s from `flops_per_clip` and, given the accelerator's peak, the MFU.
Without a video folder it writes `videos` synthetic clips of `seconds` seconds with `write_mp4`.
"""

from __future__ import annotations

import json
import tempfile
import time
from dataclasses import asdict, dataclass
from pathlib import Path

import numpy as np

from stages.extract.decode import iter_frame_batches, probe_video
from stages.extract.run import ClipEncoder, discover_videos, run_extract
from stages.extract.config import ExtractConfig
from stages.errors import StageError

__all__ = ["BenchResult", "bench_extract", "make_synthetic_videos", "to_markdown", "write_report"]


@dataclass
class BenchResult:
    """Numbers of one benchmark run (all rates in clips per second)."""

    preset: str
    device: str
    precision: str
    resolution: int
    frames_per_clip: int
    batch_clips: int
    layers: list[int]
    videos: int
    clips: int
    decode_clips_s: float
    backbone_clips_s: float
    full_clips_s: float
    full_over_backbone: float
    gflop_per_clip: float
    achieved_tflops: float
    peak_tflops: float | None = None
    mfu: float | None = None
    rounds: int = 1
    full_over_backbone_rounds: list[float] | None = None

    def to_dict(self) -> dict:
        return asdict(self)


def make_synthetic_videos(folder: Path, count: int, seconds: float, size: int, fps: float = 30.0) -> list[Path]:
    """Write `count` moving-square mp4 clips of `seconds` s at size² pixels into `folder`."""
    from stages.demo.videogen import moving_square_frames, write_mp4

    paths = []
    frames = max(1, int(round(seconds * fps)))
    for i in range(count):
        path = Path(folder) / f"bench_{i:03d}.mp4"
        write_mp4(path, moving_square_frames(frames, size=size, seed=i), fps=fps)
        paths.append(path)
    return paths


def _sync(device) -> None:
    import torch

    if getattr(device, "type", str(device)).startswith("cuda"):
        torch.cuda.synchronize(device)


def _decode_rate(cfg: ExtractConfig, paths: list[Path]) -> tuple[int, float]:
    clips = 0
    start = time.perf_counter()
    for path in paths:
        info = probe_video(path)
        for _, _frames, index in iter_frame_batches(path, cfg.sampling, cfg.resolution, cfg.resize,
                                                    cfg.batch_clips, info=info):
            clips += len(index)
    return clips, clips / max(time.perf_counter() - start, 1e-9)


def _backbone_rate(encoder: ClipEncoder, cfg: ExtractConfig, min_clips: int, seed: int = 0) -> float:
    """Clips/s of `ClipEncoder.encode` on random frames in memory, batched as extraction batches
    them: `batch_clips` overlapping clips (stride `clip_stride`) over their distinct frames."""
    rng = np.random.default_rng(seed)
    s = cfg.sampling
    index = (np.arange(cfg.batch_clips)[:, None] * s.clip_stride
             + np.arange(s.frames_per_clip)[None, :] * s.frame_step)
    shape = (int(index.max()) + 1, cfg.resolution, cfg.resolution, 3)
    frames = rng.integers(0, 256, size=shape, dtype=np.uint8)
    for _ in range(2):  # warm-up (kernel selection, allocator)
        encoder.encode(frames, index)
    _sync(encoder.device)
    steps = max(2, -(-min_clips // cfg.batch_clips))
    start = time.perf_counter()
    for _ in range(steps):
        encoder.encode(frames, index)
    _sync(encoder.device)
    return steps * cfg.batch_clips / max(time.perf_counter() - start, 1e-9)


def bench_extract(
    cfg: ExtractConfig,
    videos: Path | list[Path] | None = None,
    num_videos: int = 4,
    seconds: float = 10.0,
    video_size: int | None = None,
    peak_tflops: float | None = None,
    workdir: Path | None = None,
    prepare=None,
    rounds: int = 1,
) -> BenchResult:
    """Run the three measurements (see module docstring) and return a `BenchResult`.

    `prepare(encoder)` is called on the built `ClipEncoder` before anything is timed (e.g. to
    `torch.compile` its blocks)."""
    from losa.encoder.backbone import flops_per_clip

    with tempfile.TemporaryDirectory(prefix="losa-bench-", dir=workdir) as tmp:
        tmp = Path(tmp)
        if videos is None:
            size = video_size or max(64, (cfg.resolution * 8 // 7 + 1) // 2 * 2)
            paths = make_synthetic_videos(tmp / "videos", num_videos, seconds, size)
        else:
            paths = [item.path for item in discover_videos(videos)]
            if not paths:
                raise FileNotFoundError(f"no videos found in {videos}")
        encoder = ClipEncoder(cfg)
        if prepare is not None:
            prepare(encoder)
        decoded, decode_rate = _decode_rate(cfg, paths)
        backbone_rates, full_rates = [], []
        for r in range(max(1, int(rounds))):
            order = ("backbone", "full") if r % 2 == 0 else ("full", "backbone")
            for what in order:
                if what == "backbone":  # as many clips as the full run
                    backbone_rates.append(_backbone_rate(encoder, cfg, min_clips=decoded))
                    continue
                summary = run_extract(cfg, paths, tmp / f"bench{r}.zarr", progress=False, encoder=encoder)
                if summary.failed:
                    raise StageError(f"benchmark extraction failed for: {', '.join(summary.failed_videos)}")
                full_rates.append(summary.clips_per_second)
        backbone_rate, full_rate = float(np.median(backbone_rates)), float(np.median(full_rates))
        pairs = [f / b if b else 0.0 for f, b in zip(full_rates, backbone_rates)]
    bb = cfg.backbone
    used_depth = max(cfg.all_layers)
    flops = flops_per_clip(bb, cfg.sampling.frames_per_clip, cfg.resolution) * used_depth / bb.depth
    tflops = full_rate * flops / 1e12
    return BenchResult(
        preset=bb.name,
        device=encoder.device_name,
        precision=encoder.precision,
        resolution=cfg.resolution,
        frames_per_clip=cfg.sampling.frames_per_clip,
        batch_clips=cfg.batch_clips,
        layers=cfg.all_layers,
        videos=len(paths),
        clips=decoded,
        decode_clips_s=decode_rate,
        backbone_clips_s=backbone_rate,
        full_clips_s=full_rate,
        full_over_backbone=float(np.median(pairs)),
        gflop_per_clip=flops / 1e9,
        achieved_tflops=tflops,
        peak_tflops=peak_tflops,
        mfu=(tflops / peak_tflops) if peak_tflops else None,
        rounds=len(pairs),
        full_over_backbone_rounds=[round(p, 4) for p in pairs],
    )


def to_markdown(res: BenchResult) -> str:
    """A small markdown report of one run."""
    lines = [
        f"## Extraction benchmark: {res.preset} on {res.device} ({res.precision})",
        "",
        f"{res.videos} videos, {res.clips} clips of {res.frames_per_clip} frames at "
        f"{res.resolution}², batch {res.batch_clips}, layers {res.layers}, "
        f"{res.gflop_per_clip:.1f} GFLOP/clip",
        "",
        "| stage | clips/s |",
        "|---|---:|",
        f"| decode only | {res.decode_clips_s:.1f} |",
        f"| backbone only | {res.backbone_clips_s:.1f} |",
        f"| full extraction | {res.full_clips_s:.1f} |",
        "",
        f"full / backbone = {res.full_over_backbone:.2f}; achieved {res.achieved_tflops:.3f} TFLOP/s"
        + (f", MFU {100 * res.mfu:.1f} % of {res.peak_tflops:g} TFLOP/s" if res.mfu is not None else ""),
    ]
    if res.rounds > 1:
        lines += ["", f"medians of {res.rounds} interleaved rounds; full / backbone per round: "
                  + ", ".join(f"{p:.3f}" for p in res.full_over_backbone_rounds or [])]
    return "\n".join(lines) + "\n"


def write_report(res: BenchResult, out: Path) -> None:
    """Write `res` as JSON (.json) or markdown (.md)."""
    out = Path(out)
    if out.suffix.lower() == ".json":
        out.write_text(json.dumps(res.to_dict(), indent=1) + "\n", encoding="utf-8")
    elif out.suffix.lower() in (".md", ".markdown"):
        out.write_text(to_markdown(res), encoding="utf-8")
    else:
        raise StageError(f"--out {out}: use a .json or .md file name")
