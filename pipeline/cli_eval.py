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

from losa.metrics.detection import TIOU_PRESETS, resolve_tious
from losa.post.fusion import FUSION_FORMULAS
from pipeline.config import load_params, merge_cli, section
from pipeline.errors import handle_user_errors
from stages.data.annotations import THUMOS_POLICIES, load_annotations, thumos_exclusions
from stages.evaluate.run import evaluate_files, format_table, write_metrics
from stages.errors import StageError

#: Warnings (e.g. segments clipped to the video duration) printed before summarising the rest.
MAX_WARNINGS = 10


def run_eval(predictions: str | Path | Mapping, annotations: str | Path, *,
             subset: str | None = None, tious: Sequence[float] | None = None,
             exclude_policy: str = "none", classes: str | Path | None = None,
             fmt: str = "auto", out: str | Path | None = None, strict: bool = False,
             exclude_videos: Sequence[str] = ()) -> dict:
    """Load annotations, evaluate ``predictions`` (results file or dict), optionally write the
    metrics JSON to ``out``; returns the metrics dict. Shared by every CLI that evaluates.
    ``exclude_videos``: further videos left out of both sides (e.g. all but a held-out part)."""
    ann = load_annotations(annotations, classes, fmt)
    metrics = evaluate_files(predictions, ann, subset, tious if tious is not None
                             else resolve_tious(),
                             exclude=set(thumos_exclusions(exclude_policy)) | set(exclude_videos),
                             strict=strict)
    if out is not None:
        write_metrics(metrics, out)
    return metrics


@click.command(context_settings={"help_option_names": ["-h", "--help"]})
@click.option("--predictions", "--results", "predictions", type=click.Path(dir_okay=False, path_type=Path),
              default=None, help="ActivityNet results JSON {'results': {video: [{label, score, segment}]}}.")
@click.option("--run", "run_dir", type=click.Path(file_okay=False, path_type=Path), default=None,
              help="Instead of --predictions: a training run; its model detects actions in the "
                   "stored videos of --subset first.")
@click.option("--store", type=click.Path(path_type=Path), default=None,
              help="With --run: the activation store (default: the one the run was trained on).")
@click.option("--predictions-out", type=click.Path(dir_okay=False, path_type=Path), default=None,
              help="With --run: write the detections (ActivityNet results JSON) here; with "
                   "--classifier-scores: the fused detections.")
@click.option("--device", default="auto", show_default=True, help="With --run: auto, cpu, cuda.")
@click.option("--annotations", type=click.Path(path_type=Path), default=None,
              help="ActivityNet JSON, THUMOS-14 annotation folder, or CSV (default with --run: the "
                   "run's training annotations).")
@click.option("--classes", type=click.Path(dir_okay=False, path_type=Path), default=None,
              help="Class list file (one name per line); default: derived from the annotations.")
@click.option("--format", "fmt", type=click.Choice(["auto", "activitynet", "thumos", "csv", "epic", "ego4d"]),
              default="auto", show_default=True,
              help="Annotation format (epic: EPIC-Kitchens-100 CSV, verb classes; ego4d: Ego4D MQ JSON).")
@click.option("--subset", default=None,
              help="Subset to evaluate (e.g. testing, validation, test); required when the "
                   "annotations have several.")
@click.option("--tious", default=None, help="tIoU thresholds: start:step:stop or a comma list.")
@click.option("--preset", type=click.Choice(sorted(TIOU_PRESETS)), default=None,
              help="Named tIoUs: thumos14 = 0.3:0.1:0.7, anet = 0.5:0.05:0.95 (the default).")
@click.option("--exclude-policy", type=click.Choice(list(THUMOS_POLICIES)), default="none",
              show_default=True,
              help="THUMOS-14 videos to leave out: actionformer (212 test videos) or opentad (211).")
@click.option("--out", type=click.Path(dir_okay=False, path_type=Path), default=None,
              help="Write the metrics JSON here (atomically).")
@click.option("--holdout", is_flag=True, default=False,
              help="With --run: score the run on the held-out part of its training subset (train.holdout) "
                   "instead of --subset — for choosing layers / variants; report test once.")
@click.option("--strict", is_flag=True, default=False,
              help="Refuse results holding videos absent from the ground truth (default: score "
                   "their detections as false positives, as the official evaluator, and warn).")
@click.option("--classifier-scores", type=click.Path(dir_okay=False, path_type=Path), default=None,
              help="Video-level class scores JSON {'class': [names], 'results': {video: [scores]}}: "
                   "label each (class-agnostic) detection with the video's top classes first.")
@click.option("--fusion-topk", type=click.IntRange(1), default=2, show_default=True,
              help="With --classifier-scores: classes paired with every segment.")
@click.option("--fusion-formula", type=click.Choice(list(FUSION_FORMULAS)), default="sqrt",
              show_default=True, help="With --classifier-scores: sqrt = sqrt(class x segment score) "
                                      "(ActionFormer), product, or segment (segment score only).")
@click.option("--fusion-softmax/--no-fusion-softmax", default=False, show_default=True,
              help="With --classifier-scores: softmax the class scores first (raw logits).")
@click.option("--fusion-max-segments", type=click.IntRange(0), default=0, show_default=True,
              help="With --classifier-scores: best segments per video kept before fusion (0: all).")
@click.option("--params", "params_file", type=click.Path(dir_okay=False, path_type=Path), default=None,
              help="params.yaml whose 'evaluate' section supplies defaults.")
@click.pass_context
@handle_user_errors
def main(ctx: click.Context, params_file: Path | None, **opts) -> None:
    """Evaluate detection results (ActivityNet mAP) and print a per-class AP table.

    Either score a results file (--predictions, from any system) or a trained run (--run)."""
    if params_file is not None:
        opts = merge_cli(ctx, section(load_params(params_file), "evaluate", str(params_file)), opts)
    predictions, run_dir, annotations = opts["predictions"], opts["run_dir"], opts["annotations"]
    subset, tious, preset = opts["subset"], opts["tious"], opts["preset"]
    exclude_policy, classes, fmt, out = opts["exclude_policy"], opts["classes"], opts["fmt"], opts["out"]
    if (predictions is None) == (run_dir is None):
        raise click.UsageError("give exactly one of --predictions FILE or --run DIR")
    if tious is not None and preset is not None:
        raise click.UsageError("--tious and --preset are mutually exclusive")
    if run_dir is None and annotations is None:
        raise click.UsageError("--annotations is required with --predictions")
    thresholds = resolve_tious(tious, preset)
    scores_file = opts["classifier_scores"]
    if run_dir is not None and scores_file is None:
        from stages.rundir import read_run_info

        if read_run_info(run_dir).get("train_cfg", {}).get("class_agnostic"):
            raise click.UsageError(f"run {run_dir} is class-agnostic: pass --classifier-scores FILE "
                                   f"(video-level class scores) to label its detections")
    keep_out: list[str] = []
    if opts["holdout"]:
        if run_dir is None:
            raise click.UsageError("--holdout needs --run DIR (a run trained with train.holdout > 0)")
        subset, annotations, keep_out = _holdout_part(run_dir, annotations, classes, fmt)
    if run_dir is not None:
        from stages.infer.predict import SubsetRequired, predict_run

        try:
            predictions, annotations = predict_run(
                run_dir, opts["store"], annotations, subset,
                exclude=set(thumos_exclusions(exclude_policy)) | set(keep_out),
                classes=classes, fmt=fmt, device=opts["device"], predictions_out=opts["predictions_out"])
        except SubsetRequired as exc:
            raise click.UsageError(f"--subset is required: the annotations have subsets {exc.subsets}") from None
    if scores_file is not None:
        predictions = _fuse(predictions, scores_file, annotations, classes, fmt, opts)
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        metrics = run_eval(predictions, annotations, subset=subset, tious=thresholds,
                           exclude_policy=exclude_policy, classes=classes, fmt=fmt, out=out,
                           strict=opts["strict"], exclude_videos=keep_out)
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
          fmt: str, opts: Mapping) -> dict:
    """Detections relabelled with the classifier scores (written to --predictions-out if given)."""
    from stages.infer.fusion import FusionSettings, fuse_predictions
    from storage.atomic import atomic_write_json

    settings = FusionSettings(topk=opts["fusion_topk"], formula=opts["fusion_formula"],
                              softmax=opts["fusion_softmax"], max_segments=opts["fusion_max_segments"])
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")   # run_eval reports the annotation warnings once
        ann_classes = load_annotations(annotations, classes, fmt).classes
    fused = fuse_predictions(predictions, scores_file, settings, ann_classes)
    if opts["predictions_out"] is not None:
        atomic_write_json(opts["predictions_out"], fused, indent=None)
    return fused


if __name__ == "__main__":  # pragma: no cover
    main()
