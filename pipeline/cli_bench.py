"""`losa-bench`: throughput benchmarks.

    losa-bench extract [VIDEO_DIR] --preset vit-g --resolution 224 [--videos N --seconds S]
                       [--peak-tflops 790] [--out report.json|report.md]
    losa-bench train [--preset vit-g --steps 2304 --backbone vit-s] [--out report.md]
    losa-bench train --epochs 3 [--actionformer CHECKOUT] --preset vit-s --steps 384 --videos 16 --window 256
    losa-bench gpu [--tiny] [--peak-tflops 790] [--compile] [--out gpu.json]
"""

from __future__ import annotations

import dataclasses
import functools
from pathlib import Path
from typing import Literal

import click

from pipeline.errors import is_user_error, message_of

from losa.schema import knob, settings
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


def bench_options(cls: type):
    """Options of a benchmark from its settings class (plus --threads); the command function gets
    the validated fields as keyword arguments (one-line exit-2 error for a bad value)."""
    groups = (Group("bench", cls), *RUNTIME)

    def decorate(f):
        @functools.wraps(f)
        def inner(*args, **cli):
            vals = collect(cli, groups)
            try:
                obj = cls.from_dict(vals["bench"])
            except StageError as exc:
                raise UsageFailure(str(exc)) from None
            apply_threads(ThreadSettings.from_dict(vals["runtime"]).threads)
            rest = {k: v for k, v in cli.items() if "__" not in k}  # click arguments (VIDEO_DIR)
            return f(*args, **rest, **{fd.name: getattr(obj, fd.name) for fd in dataclasses.fields(obj)})

        return knob_options(*groups)(inner)

    return decorate


@settings(what="losa-bench extract", error=StageError)
class BenchExtract:
    """Extraction benchmark on synthetic videos (or a folder)."""

    preset: str = knob("vit-s", "Backbone: tiny, vit-s, ..., vit-g.")
    checkpoint: Path | None = knob(None, "Optional VideoMAEv2 weights.")
    layers: str | None = knob(None, "Blocks to tap (default: 1/5..4/5 of the depth) plus the last.")
    num_videos: int = knob(4, "Synthetic videos to generate when no VIDEO_DIR is given.", ge=1, flag="videos")
    seconds: float = knob(10.0, "Length of each synthetic video.", gt=0)
    video_size: int | None = knob(None, "Synthetic frame size (default: resolution * 8/7).", ge=1)
    resolution: int = knob(224, "Square input size.", ge=1)
    frames: int = knob(16, "Frames per clip.", ge=1)
    clip_stride: int = knob(4, "Frames between clip starts.", ge=1)
    batch_clips: int = knob(32, "Clips per forward pass.", ge=1)
    store_dtype: Literal[STORE_DTYPES] = knob(STORE_DTYPES[0], "Stored dtype.", flag="dtype")  # extract's choices
    precision: Literal[PRECISIONS] = knob(PRECISIONS[0], "Compute precision (auto: bf16 on CUDA, fp32 on CPU).")
    device: str = knob("auto", "auto, cpu, cuda, cuda:N.")
    peak_tflops: float | None = knob(None, "Accelerator peak (dense) to report MFU against.", gt=0)
    rounds: int = knob(1, "Interleaved rounds of backbone-only and full extraction (order reversed every other "
                          "round); rates and full / backbone are medians over them.", ge=1)
    out: Path | None = knob(None, "Also write the report (.json or .md).")


@settings(what="losa-bench train", error=StageError)
class BenchTrain:
    """Training-step benchmark on a synthetic store."""

    preset: str = knob("vit-g", "Backbone whose activation shapes the synthetic store mimics (vit-g: C=1408).")
    num_steps: int = knob(2304, "Steps per video.", ge=1, flag="steps")
    num_videos: int = knob(2, "Synthetic videos.", ge=1, flag="videos")
    batch_size: int = knob(1, "Videos per step.", ge=1)
    iters: int = knob(3, "Timed optimisation steps per mode.", ge=1)
    modes: str = knob("head-only,side,losa", "Model modes timed, comma separated.")
    backbone: str = knob("vit-s", "Backbone run on the fly from frames for the comparison ('none' to skip).")
    onfly_clips: int | None = knob(None, "Clips actually run through the on-the-fly backbone (extrapolated to "
                                         "--steps).", ge=1)
    resolution: int = knob(224, "Input size of the on-the-fly backbone.", ge=1)
    device: str = knob("auto", "auto, cpu, cuda, cuda:N.")
    out: Path | None = knob(None, "Also write the report (.json or .md).")
    epochs: int = knob(0, "Instead of single steps, time whole training epochs (this many per run, the first "
                          "dropped) of --modes head-only/losa with losa-train's loop, on CPU (0: step benchmark).",
                       ge=0)
    actionformer: Path | None = knob(None, "With --epochs: checkout of happyharrycn/actionformer_release (outside "
                                           "this repository) whose own trainer is timed on the same features.")
    window: int | None = knob(None, "With --epochs: training window (max_seq_len; default min(--steps, 2304)).", ge=1)
    rounds: int = knob(2, "With --epochs: interleaved rounds (order reversed every other round).", ge=1)
    head: Literal["demo", "thumos"] = knob("demo", "With --epochs: head sizes of both sides (demo: 128 wide, 5 "
                                                   "levels; thumos: ActionFormer's THUMOS14 sizes).")


@settings(what="losa-bench nms", error=StageError)
class BenchNMS:
    """Soft-NMS benchmark against ActionFormer's compiled op."""

    actionformer: Path | None = knob(None, "Checkout of happyharrycn/actionformer_release with "
                                           "libs/utils/nms_1d_cpu built (outside this repository): its "
                                           "compiled Soft-NMS is timed side by side.")
    num_videos: int = knob(16, "Synthetic videos.", ge=1, flag="videos")
    candidates: int = knob(2000, "Candidates per video.", ge=1)
    classes: int = knob(20, "Classes.", ge=1)
    steps: int = knob(256, "Steps per video.", ge=1)
    repeats: int = knob(5, "Interleaved timed runs per method.", ge=1)
    greedy: bool = knob(False, "Also time the greedy reference loop.")
    predict: bool = knob(False, "Also time prediction end to end against ActionFormer's model.")
    out: Path | None = knob(None, "Also write the report (.json or .md).")


@click.group(context_settings={"help_option_names": ["-h", "--help"]})
def main() -> None:
    """Throughput benchmarks of the pipeline stages."""


@main.command("extract")
@click.argument("video_dir", required=False, type=click.Path(path_type=Path))
@bench_options(BenchExtract)
def extract(video_dir: Path | None, preset: str, checkpoint: Path | None, layers: str | None,
            num_videos: int, seconds: float, video_size: int | None, resolution: int, frames: int,
            clip_stride: int, batch_clips: int, store_dtype: str, precision: str, device: str,
            peak_tflops: float | None, rounds: int, out: Path | None) -> None:
    """Decode-only vs backbone-only vs full extraction clips/s on the same videos and model."""
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
                               video_size=video_size, peak_tflops=peak_tflops, rounds=rounds)
    except Exception as exc:
        if not is_user_error(exc):
            raise  # a bug: keep the traceback
        raise UsageFailure(message_of(exc)) from None
    click.echo(to_markdown(result), nl=False)
    if out is not None:
        write_report(result, out)
        click.echo(f"wrote {out}")


@main.command("train")
@bench_options(BenchTrain)
def train(preset: str, num_steps: int, num_videos: int, batch_size: int, iters: int, modes: str,
          backbone: str, onfly_clips: int | None, resolution: int, device: str, out: Path | None,
          epochs: int, actionformer: Path | None, window: int | None, rounds: int, head: str) -> None:
    """Training-step time and peak memory from the store (head-only, side, LoSA) vs a backbone in the loop;
    with --epochs, training-epoch time of head-only / LoSA vs ActionFormer's trainer (--actionformer)."""
    import json

    from stages.tools.bench_train import bench_train

    try:
        if out is not None and out.suffix.lower() not in (".json", ".md", ".markdown"):
            raise StageError(f"--out {out}: use a .json or .md file name")
        if actionformer is not None and not epochs:
            raise StageError("--actionformer needs --epochs N (N >= 2)")
        if epochs:
            from losa.encoder.backbone import get_preset
            from stages.extract.config import default_layers
            from stages.tools.bench_epoch import HEADS, bench_epoch

            if device not in ("auto", "cpu"):
                raise StageError(f"--device {device}: the epoch benchmark runs on CPU")
            bb = get_preset(preset)
            picked = [m.strip() for m in modes.split(",") if m.strip() in ("head-only", "losa")]
            result = bench_epoch(actionformer, num_videos=num_videos, num_steps=num_steps,
                                 max_seq_len=window or min(num_steps, 2304), channels=bb.embed_dim,
                                 taps=default_layers(bb.depth), last=bb.depth, batch_size=batch_size,
                                 epochs=epochs, rounds=rounds, modes=picked, head=HEADS[head], threads=None,
                                 progress=lambda m: click.echo(m, err=True))
        else:
            result = bench_train(preset=preset, num_steps=num_steps, num_videos=num_videos,
                                 batch_size=batch_size, iters=iters,
                                 modes=[m.strip() for m in modes.split(",") if m.strip()],
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
@bench_options(BenchNMS)
def nms(actionformer: Path | None, num_videos: int, candidates: int, classes: int, steps: int, repeats: int,
        greedy: bool, predict: bool, out: Path | None) -> None:
    """Soft-NMS (and with --predict, prediction) time: ours vs ActionFormer's compiled op, interleaved."""
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
