"""`losa-eval`: ActivityNet detection mAP of a results JSON against annotations.

Example::

    losa-eval --predictions results.json --annotations thumos14_test_annotations/ \\
              --subset test --preset thumos14 --exclude-policy actionformer --out metrics.json

ActivityNet protocol (class-agnostic detections + external video-level scores, docs/activitynet.md)::

    losa-eval --results dets.json --annotations activity_net.v1-3.min.json --subset validation \
              --classifier-scores cuhk_val_simp_share.json --fusion-topk 2 --fusion-formula sqrt
"""

from __future__ import annotations

import warnings
from collections.abc import Mapping, Sequence
from pathlib import Path

import click

from losa.metrics.detection import resolve_tious
from losa.schema import knob, settings
from pipeline.config import load_params, section
from pipeline.errors import handle_user_errors
from pipeline.knobs import Group, collect, knob_options
from stages.data.annotations import load_annotations, thumos_exclusions
from stages.evaluate.run import evaluate_files, format_table, write_metrics
from stages.errors import StageError
from stages.evaluate.config import EvalSettings, parse_pairs
from stages.infer.fusion import FusionSettings
from stages.threads import ThreadSettings, apply_threads

#: Warnings (e.g. segments clipped to the video duration) printed before summarising the rest.
MAX_WARNINGS = 10


def run_eval(predictions: str | Path | Mapping, annotations: str | Path, *,
             subset: str | None = None, tious: Sequence[float] | None = None,
             exclude_policy: str = "none", classes: str | Path | None = None,
             fmt: str = "auto", out: str | Path | None = None, strict: bool = False,
             exclude_videos: Sequence[str] = (), allow_partial_classes: bool = False,
             duplicates: str = "keep", pairs: str = "") -> dict:
    """Load annotations, evaluate ``predictions`` (results file or dict), optionally write the
    metrics JSON to ``out``; returns the metrics dict. Shared by every CLI that evaluates.
    ``exclude_videos``: further videos left out of both sides (e.g. all but a held-out part);
    ``allow_partial_classes`` / ``duplicates``: see `stages.data.checks`."""
    ann = load_annotations(annotations, classes, fmt, allow_partial_classes=allow_partial_classes,
                           duplicates=duplicates)
    metrics = evaluate_files(predictions, ann, subset, tious if tious is not None
                             else resolve_tious(),
                             exclude=set(thumos_exclusions(exclude_policy)) | set(exclude_videos),
                             strict=strict, pairs=parse_pairs(pairs))
    if out is not None:
        write_metrics(metrics, out)
    return metrics


@settings(what="losa-eval", error=StageError)
class EvalRun:
    """What to score and where to write (params.yaml's ``evaluate`` section may hold these too)."""

    predictions: Path | None = knob(None, "ActivityNet results JSON {'results': {video: [{label, score, segment}]}}.",
                                    aliases=("results",))
    run_dir: Path | None = knob(None, "Instead of --predictions: a training run; its model detects actions in the "
                                      "stored videos of --subset first.", flag="run")
    store: Path | None = knob(None, "With --run: the activation store (default: the one the run was trained on).")
    predictions_out: Path | None = knob(None, "With --run: write the detections (ActivityNet results JSON) here; "
                                              "with --classifier-scores: the fused detections.")
    device: str = knob("auto", "With --run: auto, cpu, cuda.")
    annotations: Path | None = knob(None, "ActivityNet JSON, THUMOS-14 annotation folder, or CSV (default with "
                                          "--run: the run's training annotations).")
    classes: Path | None = knob(None, "Class list file (one name per line); default: derived from the annotations.")
    out: Path | None = knob(None, "Write the metrics JSON here (atomically).")
    classifier_scores: Path | None = knob(
        None, "Video-level class scores JSON {'class': [names], 'results': {video: [scores]}}: label each "
              "(class-agnostic) detection with the video's top classes first.")


#: The settings losa-eval offers; params.yaml's ``evaluate`` section has the same keys.
GROUPS = (
    Group("run", EvalRun),
    Group("evaluate", EvalSettings, shown={"tious": "anet preset"}),
    Group("fusion", FusionSettings),
    Group("runtime", ThreadSettings),
)


@click.command(context_settings={"help_option_names": ["-h", "--help"]})
@knob_options(*GROUPS)
@click.option("--params", "params_file", type=click.Path(dir_okay=False, path_type=Path), default=None,
              help="params.yaml whose 'evaluate' section supplies defaults.")
@handle_user_errors
def main(params_file: Path | None, **cli) -> None:
    """Evaluate detection results (ActivityNet mAP) and print a per-class AP table.

    Either score a results file (--predictions, from any system) or a trained run (--run)."""
    defaults = section(load_params(params_file), "evaluate", str(params_file)) if params_file else {}
    vals = collect(cli, GROUPS, defaults, where="evaluate", source=str(params_file))
    if vals["evaluate"].get("tious") is not None and vals["evaluate"].get("preset") is not None:
        raise click.UsageError("--tious and --preset are mutually exclusive")
    run, ev = EvalRun.from_dict(vals["run"]), EvalSettings.from_dict(vals["evaluate"])
    fusion = FusionSettings.from_dict(vals["fusion"])
    apply_threads(ThreadSettings.from_dict(vals["runtime"]).threads)
    predictions, run_dir, annotations = run.predictions, run.run_dir, run.annotations
    subset, tious, preset = ev.subset, ev.tious, ev.preset
    exclude_policy, classes, fmt, out = ev.exclude_policy, run.classes, ev.fmt, run.out
    if (predictions is None) == (run_dir is None):
        raise click.UsageError("give exactly one of --predictions FILE or --run DIR")
    if tious is not None and preset is not None:
        raise click.UsageError("--tious and --preset are mutually exclusive")
    if run_dir is None and annotations is None:
        raise click.UsageError("--annotations is required with --predictions")
    thresholds = resolve_tious(tious, preset)
    scores_file = run.classifier_scores
    if run_dir is not None and scores_file is None:
        from stages.rundir import read_run_info

        if read_run_info(run_dir).get("train_cfg", {}).get("class_agnostic"):
            raise click.UsageError(f"run {run_dir} is class-agnostic: pass --classifier-scores FILE "
                                   f"(video-level class scores) to label its detections")
    keep_out: list[str] = []
    if ev.holdout:
        if run_dir is None:
            raise click.UsageError("--holdout needs --run DIR (a run trained with train.holdout > 0)")
        subset, annotations, keep_out = _holdout_part(run_dir, annotations, classes, fmt)
    if run_dir is not None:
        from stages.infer.predict import SubsetRequired, predict_run

        try:
            predictions, annotations = predict_run(
                run_dir, run.store, annotations, subset,
                exclude=set(thumos_exclusions(exclude_policy)) | set(keep_out),
                classes=classes, fmt=fmt, device=run.device, predictions_out=run.predictions_out,
                allow_partial_classes=ev.allow_partial_classes)
        except SubsetRequired as exc:
            raise click.UsageError(f"--subset is required: the annotations have subsets {exc.subsets}") from None
    if scores_file is not None:
        predictions = _fuse(predictions, scores_file, annotations, classes, fmt, fusion, run.predictions_out)
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        metrics = run_eval(predictions, annotations, subset=subset, tious=thresholds,
                           exclude_policy=exclude_policy, classes=classes, fmt=fmt, out=out,
                           strict=ev.strict, exclude_videos=keep_out,
                           allow_partial_classes=ev.allow_partial_classes, duplicates=ev.duplicates,
                           pairs=ev.pairs)
    for w in caught[:MAX_WARNINGS]:
        click.echo(f"Warning: {w.message}", err=True)
    if len(caught) > MAX_WARNINGS:
        click.echo(f"Warning: ... and {len(caught) - MAX_WARNINGS} more warnings", err=True)
    click.echo(format_table(metrics))
    if out is not None:
        click.echo(f"metrics written to {out}")


def _holdout_part(run_dir: Path, annotations: Path | None, classes: Path | None, fmt: str
                  ) -> tuple[str, Path, list[str]]:
    """(the run's training subset, annotations, its videos that were trained on — left out)."""
    from stages.rundir import read_run_info

    info = read_run_info(run_dir)
    held = info.get("holdout_videos") or []
    if not held:
        raise StageError(f"run {run_dir} held no training videos out (train.holdout was "
                         f"{info.get('train_cfg', {}).get('holdout', 0)}); train with --holdout 0.25")
    annotations = annotations or Path(info["annotations"])
    subset = info["train_subset"]
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")   # run_eval reports the annotation warnings once
        trained = set(load_annotations(annotations, classes, fmt).videos_in(subset)) - set(held)
    return subset, annotations, sorted(trained)


def _fuse(predictions: Path | Mapping, scores_file: Path, annotations: Path, classes: Path | None,
          fmt: str, settings: FusionSettings, predictions_out: Path | None) -> dict:
    """Detections relabelled with the classifier scores (written to --predictions-out if given)."""
    from stages.infer.fusion import fuse_predictions
    from storage.atomic import atomic_write_json

    with warnings.catch_warnings():
        warnings.simplefilter("ignore")   # run_eval reports the annotation warnings once
        ann_classes = load_annotations(annotations, classes, fmt).classes
    fused = fuse_predictions(predictions, scores_file, settings, ann_classes)
    if predictions_out is not None:
        atomic_write_json(predictions_out, fused, indent=None)
    return fused


if __name__ == "__main__":  # pragma: no cover
    main()
