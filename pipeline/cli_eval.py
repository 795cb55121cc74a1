"""`losa-eval`: ActivityNet detection mAP of a results JSON against annotations.

Example::

    losa-eval --predictions results.json --annotations thumos14_test_annotations/ \\
              --subset test --preset thumos14 --exclude-policy actionformer --out metrics.json
"""

from __future__ import annotations

import warnings
from collections.abc import Mapping, Sequence
from pathlib import Path

import click

from losa.metrics import TIOU_PRESETS, resolve_tious
from pipeline.errors import handle_user_errors
from stages.annotations import THUMOS_POLICIES, load_annotations, thumos_exclusions
from stages.evaluate import evaluate_files, format_table, write_metrics

#: Warnings (e.g. segments clipped to the video duration) printed before summarising the rest.
MAX_WARNINGS = 10


def run_eval(predictions: str | Path | Mapping, annotations: str | Path, *,
             subset: str | None = None, tious: Sequence[float] | None = None,
             exclude_policy: str = "none", classes: str | Path | None = None,
             fmt: str = "auto", out: str | Path | None = None) -> dict:
    """Load annotations, evaluate ``predictions`` (results file or dict), optionally write the
    metrics JSON to ``out``; returns the metrics dict. Shared by every CLI that evaluates."""
    ann = load_annotations(annotations, classes, fmt)
    metrics = evaluate_files(predictions, ann, subset, tious if tious is not None
                             else resolve_tious(), exclude=thumos_exclusions(exclude_policy))
    if out is not None:
        write_metrics(metrics, out)
    return metrics


@click.command(context_settings={"help_option_names": ["-h", "--help"]})
@click.option("--predictions", required=True, type=click.Path(dir_okay=False, path_type=Path),
              help="ActivityNet results JSON {'results': {video: [{label, score, segment}]}}.")
@click.option("--annotations", required=True, type=click.Path(path_type=Path),
              help="ActivityNet JSON, THUMOS-14 annotation folder, or CSV.")
@click.option("--classes", type=click.Path(dir_okay=False, path_type=Path), default=None,
              help="Class list file (one name per line); default: derived from the annotations.")
@click.option("--format", "fmt", type=click.Choice(["auto", "activitynet", "thumos", "csv"]),
              default="auto", show_default=True, help="Annotation format.")
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
@handle_user_errors
def main(predictions: Path, annotations: Path, classes: Path | None, fmt: str,
         subset: str | None, tious: str | None, preset: str | None, exclude_policy: str,
         out: Path | None) -> None:
    """Evaluate detection results (ActivityNet mAP) and print a per-class AP table."""
    if tious is not None and preset is not None:
        raise click.UsageError("--tious and --preset are mutually exclusive")
    thresholds = resolve_tious(tious, preset)
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        metrics = run_eval(predictions, annotations, subset=subset, tious=thresholds,
                           exclude_policy=exclude_policy, classes=classes, fmt=fmt, out=out)
    for w in caught[:MAX_WARNINGS]:
        click.echo(f"Warning: {w.message}", err=True)
    if len(caught) > MAX_WARNINGS:
        click.echo(f"Warning: ... and {len(caught) - MAX_WARNINGS} more warnings", err=True)
    click.echo(format_table(metrics))
    if out is not None:
        click.echo(f"metrics written to {out}")


if __name__ == "__main__":  # pragma: no cover
    main()
