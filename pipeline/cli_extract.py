"""`losa-extract`: videos (files and folders) → frozen VideoMAEv2 activations in a Zarr store.

Exit status: 0 all videos in the store, 1 some videos failed (listed by `losa-store failures`),
2 usage, configuration, input or provenance error (one line), 4 the store cannot be written
(read-only file system or folder, disk full: the run stops cleanly, complete videos are kept),
130 interrupted (rerun to resume).
"""

from __future__ import annotations

import sys
from pathlib import Path

import click

from losa.encoder.clips import ClipSampling
from losa.schema import knob, settings
from pipeline.config import load_params, section
from pipeline.errors import EXIT_NOT_WRITABLE, CliError, exit_code_of, is_user_error, message_of
from pipeline.knobs import Group, collect, knob_options
from stages.errors import StageError
from stages.extract.config import ExtractConfig
from stages.threads import ThreadSettings, apply_threads

__all__ = ["GROUPS", "ExtractRun", "main", "parse_layers", "parse_shard"]


class UsageFailure(click.ClickException):
    """A user error reported in one line with exit status 2."""

    exit_code = 2


def parse_layers(text: str | list | None) -> list[int]:
    """'8,16,24,32' (or a list from params.yaml) → [8, 16, 24, 32]; '', 'none' or None → [] (only
    the last layer)."""
    if isinstance(text, (list, tuple)):
        text = ",".join(str(v) for v in text)
    text = "" if text is None else str(text).strip().strip("[]")
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


@settings(what="losa-extract", error=StageError)
class ExtractRun:
    """Where to write and how to split the work (speed only: not recorded in the store)."""

    store: Path | None = knob(None, "Output Zarr store (created or resumed).")
    shard: str = knob("0/1", "Process shard i of n (stable hash of the video id).")
    workers: int = knob(1, "Extractor processes sharing the store.", ge=1)
    dask_scheduler: str | None = knob(None, "Address of a Dask scheduler (tcp://host:8786): one task per video "
                                            "on its workers; the store must be on a file system they all see.")
    progress: bool = knob(True, "Show a progress bar.")


#: The settings losa-extract offers; params.yaml's ``extract`` section has the same keys (plus
#: ``videos``: the INPUTS).
GROUPS = (
    Group("run", ExtractRun),
    Group("extract", ExtractConfig, raw=("layers",), shown={"layers": "auto"}),
    Group("sampling", ClipSampling),
    Group("runtime", ThreadSettings),
)


@click.command(context_settings={"help_option_names": ["-h", "--help"]})
@click.argument("inputs", nargs=-1, type=click.Path(path_type=Path))
@knob_options(*GROUPS)
@click.option("--params", "params_file", type=click.Path(path_type=Path), default=None,
              help="params.yaml whose 'extract' section supplies defaults (inputs under 'videos').")
def main(params_file: Path | None, inputs: tuple[Path, ...], **cli) -> None:
    """Extract block activations of every video in INPUTS (files or folders, searched recursively)."""
    try:
        opts = _merged_options(params_file, inputs, cli)
        cfg, inputs, store, shard, workers, progress, threads = _build(opts)
    except UsageFailure:
        raise
    except Exception as exc:
        if not is_user_error(exc):
            raise  # a bug: keep the traceback
        raise UsageFailure(message_of(exc)) from None

    apply_threads(threads)
    from stages.extract.run import run_extract

    if cfg.checkpoint is None:
        click.echo(f"warning: no --checkpoint: random {cfg.preset} weights (seed {cfg.seed}); "
                   "features are only meaningful for testing", err=True)
    try:
        summary = run_extract(cfg, inputs, store, shard=shard, workers=workers, progress=progress,
                              scheduler=opts["run"].get("dask_scheduler"))
    except KeyboardInterrupt:
        click.echo(f"interrupted: committed videos are kept in {store}; rerun the same command to resume",
                   err=True)
        sys.exit(130)
    except Exception as exc:
        if not is_user_error(exc):
            raise  # a bug: keep the traceback
        if exit_code_of(exc, 2) == EXIT_NOT_WRITABLE:
            raise CliError(message_of(exc), EXIT_NOT_WRITABLE) from None
        raise UsageFailure(message_of(exc)) from None

    rate = summary.clips_per_second
    line = (f"{store}: extracted {summary.done} video(s), {summary.clips} clips in "
            f"{summary.seconds:.1f} s ({rate:.1f} clips/s); {summary.skipped_existing} already present")
    if summary.busy:
        line += f"; {summary.busy} being extracted by another process"
    for entry in summary.unrecorded[:10]:  # failures the store's log could not take
        click.echo(f"failed (not in the failure log): {entry}", err=True)
    if summary.failed:
        shown = ", ".join(summary.failed_videos[:5]) + (" ..." if summary.failed > 5 else "")
        line = f"{line}; {summary.failed} FAILED ({shown}); reasons: losa-store failures {store}"
    if summary.stopped:
        click.echo(line)
        raise CliError(f"stopped: {summary.stopped}; complete videos are kept, fix the cause and "
                       "rerun the same command to resume", EXIT_NOT_WRITABLE)
    if summary.failed:
        click.echo(line)
        sys.exit(1)
    click.echo(line)


def _merged_options(params_file: Path | None, inputs: tuple[Path, ...], cli: dict) -> dict:
    """``{group: {field: value}}`` (see GROUPS) plus ``inputs``, from the command line and params."""
    defaults = section(load_params(params_file), "extract", str(params_file)) if params_file else {}
    videos = defaults.pop("videos", None)
    opts: dict = collect(cli, GROUPS, defaults, where="extract", source=str(params_file))
    if not inputs and videos:
        inputs = tuple(Path(v) for v in ([videos] if isinstance(videos, str) else videos))
    opts["inputs"] = inputs
    return opts


def _build(opts: dict):
    from losa.encoder.backbone import get_preset
    from stages.extract.config import default_layers

    if not opts["inputs"]:
        raise UsageFailure("no INPUTS: give video files and/or folders to extract")
    run = ExtractRun.from_dict(opts["run"])
    if run.store is None:
        raise UsageFailure("missing --store PATH (the Zarr store to write)")
    settings_ = dict(opts["extract"])
    layers = settings_.pop("layers", "auto")
    if str(layers).strip() == "auto":
        layers = default_layers(get_preset(settings_.get("preset", "vit-g")).depth)
    else:
        layers = parse_layers(layers)
    cfg = ExtractConfig(**settings_, layers=layers, sampling=ClipSampling(**opts["sampling"]))
    threads = ThreadSettings.from_dict(opts["runtime"]).threads
    return cfg, list(opts["inputs"]), run.store, parse_shard(run.shard), run.workers, run.progress, threads


if __name__ == "__main__":  # pragma: no cover
    main()
