"""`losa-extract`: videos (files and folders) → frozen VideoMAEv2 activations in a Zarr store.

Exit status: 0 all videos in the store, 1 some videos failed (listed by `losa-store failures`),
2 usage, configuration or provenance error (one line), 130 interrupted (rerun to resume).
"""

from __future__ import annotations

import sys
from pathlib import Path

import click

from pipeline.config import load_params, merge_cli, section

__all__ = ["main", "parse_layers", "parse_shard"]


class UsageFailure(click.ClickException):
    """A user error reported in one line with exit status 2."""

    exit_code = 2


def parse_layers(text: str) -> list[int]:
    """'8,16,24,32' → [8, 16, 24, 32]; '' or 'none' → [] (only the last layer)."""
    text = str(text).strip()
    if text.lower() in ("", "none", "last"):
        return []
    out = []
    for part in text.split(","):
        part = part.strip()
        try:
            out.append(int(part))
        except ValueError:
            raise UsageFailure(f"--layers: {part!r} is not a block index (example: 8,16,24,32)") from None
    return out


def parse_shard(text: str) -> tuple[int, int]:
    """'i/n' → (i, n) with 0 <= i < n."""
    try:
        i, n = (int(x) for x in str(text).split("/"))
    except ValueError:
        raise UsageFailure(f"--shard {text!r} must look like i/n, e.g. 0/4") from None
    if n < 1 or not 0 <= i < n:
        raise UsageFailure(f"--shard {text!r}: need 0 <= i < n")
    return i, n


@click.command(context_settings={"help_option_names": ["-h", "--help"]})
@click.argument("inputs", nargs=-1, type=click.Path(path_type=Path))
@click.option("--store", type=click.Path(path_type=Path),
              help="Output Zarr store (created or resumed).")
@click.option("--preset", default="vit-g", show_default=True,
              help="Backbone: tiny, vit-s, vit-b, vit-l, vit-h, vit-g.")
@click.option("--checkpoint", type=click.Path(path_type=Path), default=None,
              help="Official VideoMAEv2 checkpoint (.pth); without it weights are random (tests only).")
@click.option("--layers", default="auto", show_default=True,
              help="1-based blocks to store, comma separated; auto = 1/5..4/5 of the depth (vit-g: 8,16,24,32).")
@click.option("--no-last-layer", is_flag=True, help="Do not add the final block to --layers.")
@click.option("--frames", default=16, show_default=True, type=int, help="Frames per clip.")
@click.option("--frame-step", default=1, show_default=True, type=int, help="Step between a clip's frames.")
@click.option("--clip-stride", default=4, show_default=True, type=int,
              help="Frames between clip starts (one feature step each).")
@click.option("--resolution", default=224, show_default=True, type=int,
              help="Square input size (multiple of the patch size).")
@click.option("--resize", type=click.Choice(["short-crop", "squash", "squash-bilinear"]), default="short-crop",
              show_default=True,
              help="squash-bilinear: native decode, then float bilinear to the resolution (VideoMAEv2 TAD features).")
@click.option("--norm", type=click.Choice(["imagenet", "255"]), default="imagenet", show_default=True,
              help="imagenet: /255 + mean/std; 255: /255 only (released VideoMAEv2 THUMOS features).")
@click.option("--temporal", type=click.Choice(["pool", "keep"]), default="pool", show_default=True,
              help="Average the clip's tubelet slots, or keep them as cells.")
@click.option("--grid", type=int, default=1, show_default=True, help="Spatial cells per side: 1, 2 or 4.")
@click.option("--pos-table", type=click.Choice(["official", "trilinear", "bicubic"]), default="official",
              show_default=True,
              help="Position table at another size than 16x224: official = fresh sin-cos table for the "
                   "token count (VideoMAEv2); trilinear = resized 16x224 table; bicubic = per-frame resize (AdaTAD).")
@click.option("--reference-feature/--no-reference-feature", default=False, show_default=True,
              help="Also store fc_norm(mean of all last-block tokens), VideoMAEv2's TAD feature (float32).")
@click.option("--dtype", "store_dtype", type=click.Choice(["float16", "bfloat16"]), default="float16",
              show_default=True, help="Stored dtype (bfloat16 if activations exceed the float16 range).")
@click.option("--precision", type=click.Choice(["auto", "fp32", "bf16", "fp16"]), default="auto", show_default=True,
              help="Compute precision; auto = bf16 autocast on CUDA, fp32 on CPU.")
@click.option("--batch-clips", default=32, show_default=True, type=int, help="Clips per forward pass.")
@click.option("--chunk-steps", default=256, show_default=True, type=int, help="Time steps per Zarr chunk.")
@click.option("--device", default="auto", show_default=True, help="auto, cpu, cuda, cuda:N.")
@click.option("--shard", default="0/1", show_default=True, help="Process shard i of n (stable hash of the video id).")
@click.option("--workers", default=1, show_default=True, type=int, help="Extractor processes sharing the store.")
@click.option("--seed", default=0, show_default=True, type=int, help="Seed of the random weights (no --checkpoint).")
@click.option("--progress/--no-progress", default=True, show_default=True, help="Show a progress bar.")
@click.option("--params", "params_file", type=click.Path(path_type=Path), default=None,
              help="params.yaml whose 'extract' section supplies defaults (inputs under 'videos').")
@click.pass_context
def main(ctx: click.Context, params_file: Path | None, **cli) -> None:
    """Extract block activations of every video in INPUTS (files or folders, searched recursively)."""
    try:
        opts = _merged_options(ctx, params_file, cli)
        cfg, inputs, store, shard, workers = _build(opts)
    except UsageFailure:
        raise
    except (ValueError, FileNotFoundError, OSError) as exc:
        raise UsageFailure(str(exc)) from None

    from stages.extract.run import run_extract

    if cfg.checkpoint is None:
        click.echo(f"warning: no --checkpoint: random {cfg.preset} weights (seed {cfg.seed}); "
                   "features are only meaningful for testing", err=True)
    try:
        summary = run_extract(cfg, inputs, store, shard=shard, workers=workers, progress=opts["progress"])
    except KeyboardInterrupt:
        click.echo(f"interrupted: committed videos are kept in {store}; rerun the same command to resume",
                   err=True)
        sys.exit(130)
    except (ValueError, FileNotFoundError) as exc:
        raise UsageFailure(str(exc)) from None

    rate = summary.clips_per_second
    line = (f"{store}: extracted {summary.done} video(s), {summary.clips} clips in "
            f"{summary.seconds:.1f} s ({rate:.1f} clips/s); {summary.skipped_existing} already present")
    if summary.busy:
        line += f"; {summary.busy} being extracted by another process"
    if summary.failed:
        shown = ", ".join(summary.failed_videos[:5]) + (" ..." if summary.failed > 5 else "")
        click.echo(f"{line}; {summary.failed} FAILED ({shown}); reasons: losa-store failures {store}")
        sys.exit(1)
    click.echo(line)


def _merged_options(ctx: click.Context, params_file: Path | None, cli: dict) -> dict:
    if params_file is None:
        return cli
    defaults = section(load_params(params_file), "extract", str(params_file))
    videos = defaults.pop("videos", None)
    opts = merge_cli(ctx, defaults, cli)
    if not opts["inputs"] and videos:
        opts["inputs"] = tuple(Path(v) for v in ([videos] if isinstance(videos, str) else videos))
    return opts


def _build(opts: dict):
    from losa.encoder.backbone import get_preset
    from losa.encoder.sampling import ClipSampling
    from stages.extract.config import ExtractConfig, default_layers

    if not opts["inputs"]:
        raise UsageFailure("no INPUTS: give video files and/or folders to extract")
    if opts["store"] is None:
        raise UsageFailure("missing --store PATH (the Zarr store to write)")
    if opts["workers"] < 1:
        raise UsageFailure(f"--workers must be >= 1, got {opts['workers']}")
    sampling = ClipSampling(opts["frames"], opts["frame_step"], opts["clip_stride"])
    cfg = ExtractConfig(
        preset=opts["preset"],
        checkpoint=opts["checkpoint"],
        seed=opts["seed"],
        layers=(default_layers(get_preset(opts["preset"]).depth) if str(opts["layers"]).strip() == "auto"
                else parse_layers(opts["layers"])),
        include_last=not opts["no_last_layer"],
        sampling=sampling,
        resolution=opts["resolution"],
        resize=opts["resize"],
        norm=opts["norm"],
        pos_table=opts["pos_table"],
        reference_feature=opts["reference_feature"],
        temporal=opts["temporal"],
        grid=opts["grid"],
        store_dtype=opts["store_dtype"],
        precision=opts["precision"],
        batch_clips=opts["batch_clips"],
        chunk_steps=opts["chunk_steps"],
        device=opts["device"],
    )
    return cfg, list(opts["inputs"]), opts["store"], parse_shard(opts["shard"]), opts["workers"]


if __name__ == "__main__":  # pragma: no cover
    main()
