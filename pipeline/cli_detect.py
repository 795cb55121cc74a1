"""`losa-detect`: detect actions in new videos with a trained run.

Example::

    losa-detect match.mp4 --run runs/thumos_losa --out det.json --plot timeline.png
    losa-detect clips/ --run runs/thumos_losa --plot plots/ --annotations ann.json --min-score 0.2

The videos go through exactly the run's feature extraction (the backbone checkpoint is verified by
its SHA-256; pass ``--checkpoint`` when the run does not record its path), then the run's model and
NMS settings. The JSON (``--out``) keeps every detection, as evaluation needs; ``--min-score`` and
``--top-k`` only select what is printed and plotted.
"""

from __future__ import annotations

import warnings
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

import click

from losa.schema import knob, settings
from pipeline.errors import handle_user_errors
from pipeline.knobs import Group, collect, knob_options
from stages.errors import StageError
from stages.infer.fusion import FusionSettings
from stages.threads import ThreadSettings, apply_threads

__all__ = ["DetectRun", "GROUPS", "format_detections", "main", "plot_paths"]


def format_detections(video_id: str, duration: float, dets: Sequence[Mapping[str, Any]],
                      total: int, min_score: float) -> str:
    """A compact table (start, end, label, score) of the detections of one video."""
    head = f"{video_id}  ({duration:.2f} s): {total} detection(s)"
    if len(dets) < total:
        head += f", showing {len(dets)} with score >= {min_score:g}"
    if not dets:
        return head
    width = max(5, *(len(str(d["label"])) for d in dets))
    lines = [head, f"  {'start':>8}  {'end':>8}  {'label':<{width}}  {'score':>6}"]
    for d in dets:
        s, e = d["segment"]
        lines.append(f"  {s:8.2f}  {e:8.2f}  {d['label']!s:<{width}}  {d['score']:6.3f}")
    return "\n".join(lines)


def plot_paths(plot: Path, video_ids: Sequence[str]) -> dict[str, Path]:
    """PNG path per video: ``plot`` itself for one video unless it is (or looks like) a folder;
    otherwise ``plot/<key>.png`` with the store's injective key of the id (`storage.safe_key`:
    ``a/b`` → ``a~2fb``, never equal to the key of ``a__b``), so no two videos share a file."""
    from storage import safe_key

    folder = plot.is_dir() or len(video_ids) > 1 or plot.suffix.lower() != ".png"
    if not folder:
        return {video_ids[0]: plot}
    if plot.exists() and not plot.is_dir():
        raise click.UsageError(f"--plot {plot} is a file; give a folder for several videos")
    return {v: plot / (safe_key(v) + ".png") for v in video_ids}


def _ground_truth(annotations: Path | None, video_ids: Sequence[str]) -> dict[str, list]:
    if annotations is None:
        return {}
    from stages.data.annotations import load_annotations

    ann = load_annotations(annotations)
    missing = [v for v in video_ids if v not in ann.videos]
    if missing:
        click.echo(f"warning: no ground truth in {annotations} for: {', '.join(missing)}", err=True)
    return {v: list(ann.videos[v].segments) for v in video_ids if v in ann.videos}


@settings(what="losa-detect", error=StageError)
class DetectRun:
    """Knobs of losa-detect (the run fixes the features and the model; these only steer the output)."""

    run_dir: Path | None = knob(None, "Training run directory (holds run.json and model.pt).", flag="run")
    out: Path | None = knob(None, "Write all detections here (ActivityNet results JSON).")
    plot: Path | None = knob(None, "Timeline PNG (one video) or a folder of <video>.png.")
    annotations: Path | None = knob(None, "Ground truth to draw in the plots (ActivityNet JSON, THUMOS folder or CSV).")
    min_score: float = knob(0.1, "Lowest score printed and plotted.", ge=0, le=1)
    top_k: int = knob(20, "Most detections printed and plotted per video.", ge=1)
    device: str = knob("auto", "auto, cpu, cuda, cuda:N.")
    checkpoint: Path | None = knob(None, "Backbone checkpoint used to extract the run's features (SHA-256 checked).")
    cache_store: Path | None = knob(None, "Feature cache store (default: RUN/detect_cache.zarr).", flag="cache")
    batch_size: int = knob(4, "Videos per model batch.", ge=1)
    progress: bool = knob(True, "Show a progress bar.")
    classifier_scores: Path | None = knob(
        None, "Video-level class scores JSON {'class': [names], 'results': {video: [scores]}} (video ids as "
              "printed): label each detection with the video's top classes.")
    recipe_store: Path | None = knob(
        None, "Instead of detecting: extract the videos into --cache with the recipe of this store (the "
              "one a run will train on) and stop; no --run needed. A later losa-detect --run with that "
              "cache runs no backbone.")


GROUPS = (Group("run", DetectRun), Group("fusion", FusionSettings), Group("runtime", ThreadSettings))


@click.command(context_settings={"help_option_names": ["-h", "--help"]})
@click.argument("videos", nargs=-1, required=True, type=click.Path(path_type=Path))
@knob_options(*GROUPS)
@handle_user_errors
def main(videos: tuple[Path, ...], **cli: Any) -> None:
    """Detect actions in VIDEO... (files or folders) with the trained model of --run."""
    vals = collect(cli, GROUPS)
    opts = DetectRun.from_dict(vals["run"])
    fusion = FusionSettings.from_dict(vals["fusion"])
    if opts.recipe_store is not None:
        _prefill(videos, opts, ThreadSettings.from_dict(vals["runtime"]).threads)
        return
    if opts.run_dir is None:
        raise click.UsageError("missing --run DIR")
    if opts.annotations is not None and not opts.annotations.exists():
        raise click.BadParameter(f"{opts.annotations} does not exist", param_hint="--annotations")
    run_dir, out, plot, annotations = opts.run_dir, opts.out, opts.plot, opts.annotations
    min_score, top_k, classifier_scores = opts.min_score, opts.top_k, opts.classifier_scores
    apply_threads(ThreadSettings.from_dict(vals["runtime"]).threads)
    from stages.data.dataset import AGNOSTIC_CLASS
    from stages.infer.detect import detect
    from stages.tools.plot import plot_timeline, select_detections

    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always", UserWarning)
        payload = detect(list(videos), run_dir, out_json=out if classifier_scores is None else None,
                         cache_store=opts.cache_store, device=opts.device,
                         batch_size=opts.batch_size, checkpoint=opts.checkpoint, progress=opts.progress)
    for w in caught:
        click.echo(f"warning: {w.message}", err=True)
    if classifier_scores is not None:
        payload = _fuse(payload, run_dir, classifier_scores, fusion, out)
    elif payload["external_data"]["classes"] == [AGNOSTIC_CLASS]:
        click.echo(f"warning: {run_dir} is class-agnostic: every detection is labelled "
                   f"'{AGNOSTIC_CLASS}' (pass --classifier-scores to name the classes)", err=True)
    results, meta = payload["results"], payload["external_data"]["videos"]
    classes = payload["external_data"]["classes"]
    gt = _ground_truth(annotations, list(results))
    pngs = plot_paths(plot, list(results)) if plot is not None else {}
    for vid, dets in results.items():
        shown = select_detections(dets, top_k, min_score)
        click.echo(format_detections(vid, meta[vid]["duration"], shown, len(dets), min_score))
        if vid in pngs:
            plot_timeline(pngs[vid], meta[vid]["duration"], dets, gt.get(vid) if annotations else None,
                          classes, title=f"{vid} - {run_dir.name}", top_k=top_k, min_score=min_score)
    if out is not None:
        click.echo(f"detections written to {out}")
    if pngs:
        where = next(iter(pngs.values())) if len(pngs) == 1 else next(iter(pngs.values())).parent
        click.echo(f"timeline plot(s) written to {where}")


def _prefill(videos: tuple[Path, ...], opts: DetectRun, threads: Any) -> None:
    if opts.cache_store is None:
        raise click.UsageError("--recipe-store needs --cache PATH (the cache a later --run will read)")
    given = [flag for flag, value in (("--run", opts.run_dir), ("--out", opts.out), ("--plot", opts.plot),
                                      ("--classifier-scores", opts.classifier_scores)) if value is not None]
    if given:
        raise click.UsageError(f"--recipe-store fills the cache only (no detections); leave out {', '.join(given)}")
    apply_threads(threads)
    from stages.infer.detect import prefill_cache

    ids = prefill_cache(list(videos), opts.recipe_store, opts.cache_store, checkpoint=opts.checkpoint,
                        device=opts.device, progress=opts.progress)
    click.echo(f"{len(ids)} video(s) in {opts.cache_store}: {', '.join(ids)}")


def _fuse(payload: dict, run_dir: Path, scores_file: Path, fusion: FusionSettings, out: Path | None) -> dict:
    """The detect payload relabelled with the classifier scores (written to ``out`` if given)."""
    from stages.infer.fusion import fuse_results, load_classifier_scores
    from stages.rundir import read_run_info
    from storage.atomic import atomic_write_json

    info = read_run_info(run_dir)
    known = info.get("dataset_classes") or info["classes"]
    scores = load_classifier_scores(scores_file, known)
    fused = fuse_results(payload, scores, fusion, known_classes=known)
    fused["external_data"]["classes"] = list(scores.classes)
    if out is not None:
        atomic_write_json(out, fused)
    return fused


if __name__ == "__main__":  # pragma: no cover
    main()
