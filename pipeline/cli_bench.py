"""`losa-bench`: throughput benchmarks.

    losa-bench extract [VIDEO_DIR] --preset vit-g --resolution 224 [--videos N --seconds S]
                       [--peak-tflops 790] [--out report.json|report.md]
    losa-bench train [--preset vit-g --steps 2304 --backbone vit-s] [--out report.md]
    losa-bench gpu [--tiny] [--peak-tflops 790] [--compile] [--out gpu.json]
"""

from __future__ import annotations

from pathlib import Path

import click

from pipeline.errors import is_user_error, message_of

from pipeline.knobs import Group, collect, knob_options
from stages.errors import StageError
from stages.extract.config import PRECISIONS, STORE_DTYPES
from stages.threads import ThreadSettings, apply_threads

__all__ = ["main"]


class UsageFailure(click.ClickException):
    """A user error reported in one line with exit status 2."""

    exit_code = 2


#: --threads of every benchmark (benchmarks time CPU work: the thread count is part of the result).
RUNTIME = (Group("runtime", ThreadSettings),)


def _threads(cli: dict) -> int:
    return apply_threads(ThreadSettings.from_dict(collect(cli, RUNTIME)["runtime"]).threads)


@click.group(context_settings={"help_option_names": ["-h", "--help"]})
def main() -> None:
    """Throughput benchmarks of the pipeline stages."""


@main.command("extract")
@click.argument("video_dir", required=False, type=click.Path(path_type=Path))
@click.option("--preset", default="vit-s", show_default=True, help="Backbone: tiny, vit-s, ..., vit-g.")
@click.option("--checkpoint", type=click.Path(path_type=Path), default=None, help="Optional VideoMAEv2 weights.")
@click.option("--layers", default=None, help="Blocks to tap (default: 1/5..4/5 of the depth) plus the last.")
@click.option("--videos", "num_videos", default=4, show_default=True, type=int,
              help="Synthetic videos to generate when no VIDEO_DIR is given.")
@click.option("--seconds", default=10.0, show_default=True, type=float, help="Length of each synthetic video.")
@click.option("--video-size", default=None, type=int, help="Synthetic frame size (default: resolution * 8/7).")
@click.option("--resolution", default=224, show_default=True, type=int)
@click.option("--frames", default=16, show_default=True, type=int, help="Frames per clip.")
@click.option("--clip-stride", default=4, show_default=True, type=int)
@click.option("--batch-clips", default=32, show_default=True, type=int)
@click.option("--dtype", "store_dtype", type=click.Choice(STORE_DTYPES), default=STORE_DTYPES[0],
              show_default=True)
@click.option("--precision", type=click.Choice(PRECISIONS), default=PRECISIONS[0], show_default=True)
@click.option("--device", default="auto", show_default=True)
@click.option("--peak-tflops", type=float, default=None, help="Accelerator peak (dense) to report MFU against.")
@click.option("--out", type=click.Path(path_type=Path), default=None, help="Also write the report (.json or .md).")
@knob_options(*RUNTIME)
def extract(video_dir: Path | None, preset: str, checkpoint: Path | None, layers: str | None,
            num_videos: int, seconds: float, video_size: int | None, resolution: int, frames: int,
            clip_stride: int, batch_clips: int, store_dtype: str, precision: str, device: str,
            peak_tflops: float | None, out: Path | None, **cli) -> None:
    """Decode-only vs backbone-only vs full extraction clips/s on the same videos and model."""
    _threads(cli)
    from losa.encoder.sampling import ClipSampling
    from pipeline.cli_extract import parse_layers
    from stages.tools.bench_extract import bench_extract, to_markdown, write_report
    from stages.extract.config import ExtractConfig, default_layers

    try:
        if num_videos < 1 or seconds <= 0:
            raise StageError("--videos must be >= 1 and --seconds > 0")
        if out is not None and out.suffix.lower() not in (".json", ".md", ".markdown"):
            raise StageError(f"--out {out}: use a .json or .md file name")
        cfg = ExtractConfig(preset=preset, checkpoint=checkpoint, layers=[], include_last=True,
                            sampling=ClipSampling(frames, 1, clip_stride), resolution=resolution,
                            store_dtype=store_dtype, precision=precision, batch_clips=batch_clips,
                            device=device)
        cfg.layers = parse_layers(layers) if layers is not None else default_layers(cfg.backbone.depth)
        cfg.validate()
        result = bench_extract(cfg, videos=video_dir, num_videos=num_videos, seconds=seconds,
                               video_size=video_size, peak_tflops=peak_tflops)
    except Exception as exc:
        if not is_user_error(exc):
            raise  # a bug: keep the traceback
        raise UsageFailure(message_of(exc)) from None
    click.echo(to_markdown(result), nl=False)
    if out is not None:
        write_report(result, out)
        click.echo(f"wrote {out}")


@main.command("train")
@click.option("--preset", default="vit-g", show_default=True,
              help="Backbone whose activation shapes the synthetic store mimics (vit-g: C=1408).")
@click.option("--steps", "num_steps", default=2304, show_default=True, type=int, help="Steps per video.")
@click.option("--videos", "num_videos", default=2, show_default=True, type=int)
@click.option("--batch-size", default=1, show_default=True, type=int)
@click.option("--iters", default=3, show_default=True, type=int, help="Timed optimisation steps per mode.")
@click.option("--modes", default="head-only,side,losa", show_default=True)
@click.option("--backbone", default="vit-s", show_default=True,
              help="Backbone run on the fly from frames for the comparison ('none' to skip).")
@click.option("--onfly-clips", default=None, type=int,
              help="Clips actually run through the on-the-fly backbone (extrapolated to --steps).")
@click.option("--resolution", default=224, show_default=True, type=int)
@click.option("--device", default="auto", show_default=True)
@click.option("--out", type=click.Path(path_type=Path), default=None, help="Also write the report (.json or .md).")
@knob_options(*RUNTIME)
def train(preset: str, num_steps: int, num_videos: int, batch_size: int, iters: int, modes: str,
          backbone: str, onfly_clips: int | None, resolution: int, device: str, out: Path | None, **cli) -> None:
    """Training-step time and peak memory from the store (head-only, side, LoSA) vs a backbone in the loop."""
    _threads(cli)
    import json

    from stages.tools.bench_train import bench_train

    try:
        if out is not None and out.suffix.lower() not in (".json", ".md", ".markdown"):
            raise StageError(f"--out {out}: use a .json or .md file name")
        result = bench_train(preset=preset, num_steps=num_steps, num_videos=num_videos, batch_size=batch_size,
                             iters=iters, modes=[m.strip() for m in modes.split(",") if m.strip()],
                             backbone=None if backbone == "none" else backbone, onfly_clips=onfly_clips,
                             resolution=resolution, device=device, progress=lambda m: click.echo(m, err=True))
    except Exception as exc:
        if not is_user_error(exc):
            raise  # a bug: keep the traceback
        raise UsageFailure(message_of(exc)) from None
    click.echo(result["markdown"], nl=not result["markdown"].endswith("\n"))
    if out is not None:
        out.parent.mkdir(parents=True, exist_ok=True)
        if out.suffix.lower() == ".json":
            out.write_text(json.dumps(result, indent=2, default=str) + "\n")
        else:
            out.write_text(result["markdown"])
        click.echo(f"wrote {out}")


@main.command("gpu")
@click.option("--tiny", is_flag=True, help="Tiny shapes (tiny backbone, 32² clips, 64 steps): runs on a CPU in seconds.")
@click.option("--preset", default=None, help="Backbone of the extraction part (default vit-g; tiny with --tiny).")
@click.option("--steps", "num_steps", default=None, type=int, help="Training steps per video (default 2304).")
@click.option("--channels", default=None, type=int, help="Stored width for the training part (default 1408).")
@click.option("--depths", default=None, help="Encoder depths of the training part (default 12,24,40).")
@click.option("--batch-clips", default=None, type=int, help="Extraction batch (default 32).")
@click.option("--videos", "video_dir", type=click.Path(path_type=Path), default=None,
              help="Folder of videos to extract (default: synthetic ones, which need PyAV to write).")
@click.option("--parts", default="extract,reference,train", show_default=True)
@click.option("--peak-tflops", type=float, default=None, help="Device's dense bf16 peak, for the MFU (H100/H200: 790).")
@click.option("--compile", "compile_", is_flag=True, help="Also time the backbone under torch.compile.")
@click.option("--device", default="auto", show_default=True)
@click.option("--out", type=click.Path(path_type=Path), default=None, help="Write the result as JSON (.json) or markdown.")
@knob_options(*RUNTIME)
def gpu(tiny: bool, preset: str | None, num_steps: int | None, channels: int | None, depths: str | None,
        batch_clips: int | None, video_dir: Path | None, parts: str, peak_tflops: float | None,
        compile_: bool, device: str, out: Path | None, **cli) -> None:
    """One-GPU check: ViT-g bf16 extraction (clips/s, TFLOP/s, MFU, full/backbone), fp32 reference
    recipe, LoSA / head-only training step time and peak memory over encoder depths, SDPA backend."""
    _threads(cli)
    import json

    from stages.tools.bench_gpu import GpuCheckSpec, bench_gpu

    try:
        if out is not None and out.suffix.lower() not in (".json", ".md", ".markdown"):
            raise StageError(f"--out {out}: use a .json or .md file name")
        spec = GpuCheckSpec.tiny() if tiny else GpuCheckSpec()
        for name, value in (("preset", preset), ("num_steps", num_steps), ("channels", channels),
                            ("batch_clips", batch_clips)):
            if value is not None:
                setattr(spec, name, value)
        if depths is not None:
            try:
                spec.depths = tuple(int(d) for d in depths.split(",") if d.strip())
            except ValueError:
                raise StageError(f"--depths {depths!r}: give comma-separated integers") from None
            if not spec.depths or min(spec.depths) < 5:
                raise StageError("--depths: each depth must be >= 5 (4 taps + the last block)")
        result = bench_gpu(spec, device=device, peak_tflops=peak_tflops, compile=compile_, videos=video_dir,
                           parts=[p.strip() for p in parts.split(",") if p.strip()],
                           progress=lambda m: click.echo(m, err=True))
    except Exception as exc:
        if not is_user_error(exc):
            raise  # a bug: keep the traceback
        raise UsageFailure(message_of(exc)) from None
    click.echo(result["markdown"], nl=False)
    if out is not None:
        out.parent.mkdir(parents=True, exist_ok=True)
        if out.suffix.lower() == ".json":
            out.write_text(json.dumps({k: v for k, v in result.items() if k != "markdown"}, indent=1,
                                      default=str) + "\n")
        else:
            out.write_text(result["markdown"])
        click.echo(f"wrote {out}")


@main.command("nms")
@click.option("--actionformer", type=click.Path(file_okay=False, path_type=Path), default=None,
              help="Checkout of happyharrycn/actionformer_release with libs/utils/nms_1d_cpu built "
                   "(outside this repository): its compiled Soft-NMS is timed side by side.")
@click.option("--videos", "num_videos", default=16, show_default=True, type=int)
@click.option("--candidates", default=2000, show_default=True, type=int, help="Candidates per video.")
@click.option("--classes", default=20, show_default=True, type=int)
@click.option("--steps", default=256, show_default=True, type=int, help="Steps per video.")
@click.option("--repeats", default=5, show_default=True, type=int, help="Interleaved timed runs per method.")
@click.option("--greedy", is_flag=True, help="Also time the greedy reference loop.")
@click.option("--predict", is_flag=True, help="Also time prediction end to end against ActionFormer's model.")
@click.option("--out", type=click.Path(path_type=Path), default=None, help="Also write the report (.json or .md).")
@knob_options(*RUNTIME)
def nms(actionformer: Path | None, num_videos: int, candidates: int, classes: int, steps: int, repeats: int,
        greedy: bool, predict: bool, out: Path | None, **cli) -> None:
    """Soft-NMS (and with --predict, prediction) time: ours vs ActionFormer's compiled op, interleaved."""
    _threads(cli)
    import json

    from stages.tools.bench_nms import bench_nms, to_markdown

    try:
        if min(num_videos, candidates, classes, steps, repeats) < 1:
            raise ValueError("--videos, --candidates, --classes, --steps and --repeats must be >= 1")
        res = bench_nms(actionformer, num_videos=num_videos, candidates=candidates, classes=classes,
                        steps=steps, repeats=repeats, greedy=greedy, predict=predict)
    except (ValueError, FileNotFoundError, ImportError) as exc:
        raise UsageFailure(str(exc)) from None
    click.echo(to_markdown(res), nl=False)
    if out is not None:
        out.parent.mkdir(parents=True, exist_ok=True)
        out.write_text(json.dumps(res, indent=1, default=str) + "\n" if out.suffix.lower() == ".json"
                       else to_markdown(res))
        click.echo(f"wrote {out}")


if __name__ == "__main__":  # pragma: no cover
    main()
