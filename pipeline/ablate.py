"""Ablations that re-use the activation cache, run with DVC's experiment queue: ``python -m pipeline.ablate``.

Each variant (× seed) is queued as ``dvc exp run --queue -n abl-<variant>[-s<seed>]-<tag> -S key=value ...``,
then ``dvc exp run --run-all`` runs the queue in DVC's temporary copies of the repository: only
``train`` params changed, so DVC re-runs train → evaluate (and the timeline) and reuses the cached
activation store.  The results are read from ``dvc exp show --json`` (the experiments' params and
output hashes; the store's hash equal to the baseline's = extraction reused) and from each
experiment's committed ``metrics/eval.json``.  The workspace is never modified: uncommitted edits
to params.yaml (or anything else) stay as they are, and they are part of every queued experiment
(DVC queues the workspace as it is).  ``--eval-subset`` evaluates every variant on another
annotation subset via ``-S evaluate.subset=...``; ``--holdout F`` trains each variant without a seeded
fraction F of the training videos and scores it on them (``train.holdout``, ``evaluate.holdout``).
"""
from __future__ import annotations

import json
import sys
import time
from pathlib import Path

import click
import numpy as np

from pipeline.dvc_exp import (Experiment, exp_name, parse_exp_show, queue_command, read_file_at, run_all_command,
                               run_dvc, show_command)

#: (name, dvc -S overrides) — the default ablation grid on the demo data.
VARIANTS: list[tuple[str, list[str]]] = [
    ("head-only", ["train.model=head-only"]),
    ("side (AdaTAD-style)", ["train.model=side"]),
    ("LoSA long only", ["train.model=losa", "train.adapters=long"]),
    ("LoSA short only", ["train.model=losa", "train.adapters=short"]),
    ("LoSA short only (pooled short adapter)", ["train.model=losa", "train.adapters=short",
                                                "train.short_mode=pooled"]),
    ("LoSA long+short (gated)", ["train.model=losa", "train.adapters=both", "train.fusion=gated"]),
    ("LoSA long+short (pooled short adapter)", ["train.model=losa", "train.adapters=both",
                                                "train.short_mode=pooled"]),
    ("LoSA (mean short query)", ["train.model=losa", "train.short_pool=mean"]),
    ("LoSA (adapter lr 1x)", ["train.model=losa", "train.adapter_lr_scale=1"]),
    ("LoSA (sigmoid gates)", ["train.model=losa", "train.fusion=sigmoid"]),
    ("LoSA (plain sum)", ["train.model=losa", "train.fusion=sum"]),
    ("LoSA (concat)", ["train.model=losa", "train.fusion=concat"]),
    ("LoSA (layer 2 only)", ["train.model=losa", "train.layers=2"]),
    ("LoSA (layer 3 only)", ["train.model=losa", "train.layers=3"]),
]


#: the demo's classes that only the direction of motion tells apart (per-class AP columns)
MOTION_PAIR = ("move_left", "move_right")


def motion_columns(runs: list[dict]) -> list[str]:
    """AP (average over tIoUs, mean over runs) of each motion class and mean AP of the other classes."""
    def ap(run: dict, label: str) -> float:
        return float(np.mean(run["per_class"][label]))

    if not all(set(MOTION_PAIR) <= set(r.get("per_class", {})) for r in runs):
        return ["–"] * (len(MOTION_PAIR) + 1)
    cols = [np.mean([ap(r, c) for r in runs]) for c in MOTION_PAIR]
    others = [np.mean([ap(r, c) for c in r["per_class"] if c not in MOTION_PAIR]) for r in runs]
    return [f"{100 * v:.1f}" for v in [*cols, float(np.mean(others))]]


def pair_column(runs: list[dict]) -> str:
    """Mean (± std over runs) of the motion pair's labelling accuracy (`losa-eval --pairs`; chance 50)."""
    key = "+".join(MOTION_PAIR)
    accs = [r.get("pair_accuracy", {}).get(key, {}).get("accuracy") for r in runs]
    if not accs or any(a is None for a in accs):
        return "–"
    vals = 100 * np.asarray(accs, dtype=float)
    return f"{vals.mean():.1f}" + (f" ± {vals.std(ddof=1):.1f}" if len(vals) > 1 else "")


def _row(name: str, sets: list[str], runs: list[dict], seconds: float | None, skipped: bool) -> str:
    """One table row; with several seeds: mean per tIoU and mean ± std of the average mAP."""
    per_tiou = np.mean([r["mAP"] for r in runs], axis=0)
    avgs = np.array([r["average_mAP"] for r in runs])
    maps = " | ".join(f"{100 * m:.1f}" for m in per_tiou)
    avg = f"{100 * avgs.mean():.1f}" + (f" ± {100 * avgs.std(ddof=1):.1f}" if len(avgs) > 1 else "")
    motion = " | ".join([*motion_columns(runs), pair_column(runs)])
    secs = "–" if seconds is None else f"{seconds:.0f}"
    return (f"| {name} | `{' '.join(sets)}` | {maps} | **{avg}** | {motion} | {secs} | "
            f"{'yes' if skipped else 'NO'} |")


def plan(variants: list[tuple[str, list[str]]], only: str | None = None, seeds: str | None = None,
         eval_subset: str | None = None, tag: str = "",
         holdout: float | None = None) -> list[tuple[str, list[str], str]]:
    """(variant name, -S overrides, experiment name) for every variant × seed to queue.

    ``holdout``: train without that fraction of the training videos and score every variant on them
    (``train.holdout`` + ``evaluate.holdout``; ``++`` adds the keys when params.yaml lacks them)."""
    wanted = None if only is None else {s.strip() for s in only.split(",")}
    unknown = sorted((wanted or set()) - {name for name, _ in variants})
    if unknown:
        raise click.UsageError(f"unknown variant(s) {unknown}; known: {[name for name, _ in variants]}")
    seed_list = [None] if seeds is None else [s.strip() for s in seeds.split(",") if s.strip()]
    out = []
    for name, sets in variants:
        if wanted is not None and name not in wanted:
            continue
        for seed in seed_list:
            args = [*sets, *([] if seed is None else [f"train.seed={seed}"]),
                    *([] if eval_subset is None else [f"evaluate.subset={eval_subset}"]),
                    *([] if holdout is None else [f"++train.holdout={holdout:g}", "++evaluate.holdout=true"])]
            out.append((name, args, exp_name("abl", name, "" if seed is None else f"s{seed}", tag)))
    return out


def run_queue(jobs_plan: list[tuple[str, list[str], str]], jobs: int = 1,
              cwd: str | Path | None = None) -> tuple[dict, dict[str, Experiment], float]:
    """Queue every planned experiment, run the queue, read ``dvc exp show --json``.

    Returns (baseline row, experiments by name, wall seconds of the run).  If queueing fails, the
    experiments this call queued are removed from the queue again.  The experiments are read back
    from the commit they were queued on, so a commit made while the queue runs does not hide them."""
    base_rev = run_dvc(["git", "rev-parse", "HEAD"], cwd).strip()
    queued: list[str] = []
    try:
        for _, sets, name in jobs_plan:
            run_dvc(queue_command(name, sets), cwd)
            queued.append(name)
    except BaseException:
        if queued:
            run_dvc(["dvc", "queue", "remove", *queued], cwd)
        raise
    t0 = time.perf_counter()
    try:
        run_dvc(run_all_command(jobs), cwd)
    except RuntimeError as exc:  # a failed experiment: reported per row below, from exp show
        click.echo(str(exc).splitlines()[0], err=True)
    seconds = time.perf_counter() - t0
    baseline, exps = parse_exp_show(run_dvc(show_command(base_rev), cwd))
    return baseline, {e.name: e for e in exps}, seconds


def durations(exps: list[Experiment], start: float, jobs: int) -> dict[str, float | None]:
    """Wall seconds of each experiment of a sequential (``--jobs 1``) queue run, from the experiments'
    commit timestamps (each commits when it ends); None when experiments ran in parallel."""
    from datetime import datetime

    if jobs != 1:
        return {e.name: None for e in exps}
    ends = sorted((datetime.fromisoformat(e.timestamp).timestamp(), e.name) for e in exps if e.timestamp)
    out: dict[str, float | None] = {e.name: None for e in exps}
    prev = start
    for end, name in ends:
        out[name], prev = max(0.0, end - prev), end
    return out


def table(jobs_plan: list[tuple[str, list[str], str]], baseline: dict, exps: dict[str, Experiment],
          metrics_path: str, store_out: str, seconds: dict[str, float | None],
          cwd: str | Path | None = None) -> tuple[str, list[str]]:
    """(markdown table, names of experiments that failed or are missing)."""
    rows, problems, head = [], [], None
    by_variant: dict[str, list[tuple[list[str], Experiment | None, str]]] = {}
    for variant, sets, name in jobs_plan:
        by_variant.setdefault(variant, []).append((sets, exps.get(name), name))
    base_store = baseline.get("outs", {}).get(store_out)
    for variant, runs in by_variant.items():
        done = [(sets, e) for sets, e, _ in runs if e is not None and e.ok]
        problems += [f"{name}: {e.state if e else 'not found in dvc exp show'}"
                     + (f" (log: {e.log})" if e is not None and e.log else "")
                     for _, e, name in runs if e is None or not e.ok]
        if not done:
            continue
        results = [json.loads(read_file_at(e.rev, metrics_path, cwd)) for _, e in done]
        head = head or results[0]["tious"]
        reused = base_store is not None and all(e.outs.get(store_out) == base_store for _, e in done)
        secs = [seconds.get(e.name) for _, e in done]
        total = None if any(v is None for v in secs) else float(sum(secs))
        sets = [s for s in runs[0][0] if not s.startswith(("train.seed=", "evaluate.subset=", "++train.holdout=",
                                                            "++evaluate.holdout="))]
        rows.append(_row(variant, sets, results, total, reused))
    if not rows:
        return "", problems
    header = ("| variant | dvc exp run -S | " + " | ".join(f"mAP@{t:g}" for t in head)
              + " | avg mAP | " + " | ".join(f"AP {c}" for c in MOTION_PAIR)
              + " | AP other classes | direction right (%) | seconds | extract reused |")
    sep = "|" + "---|" * (len(head) + 6 + len(MOTION_PAIR) + 1)
    return "\n".join([header, sep, *rows]) + "\n", problems


@click.command(context_settings={"help_option_names": ["-h", "--help"]})
@click.option("--out", default="metrics/ablation.md", show_default=True, type=click.Path(path_type=Path))
@click.option("--only", default=None, help="Comma-separated variant names to run (default: all); names never contain commas.")
@click.option("--seeds", default=None,
              help="Comma-separated training seeds (adds -S train.seed=S); rows report mean ± std.")
@click.option("--eval-subset", default=None,
              help="Evaluate every variant on this annotation subset (-S evaluate.subset=NAME), e.g. a "
                   "held-out validation split.")
@click.option("--holdout", default=None, type=click.FloatRange(0, 1, min_open=True, max_open=True),
              help="Hold this fraction of the training videos out of training and score every variant on "
                   "them (train.holdout, evaluate.holdout) instead of the test subset.")
@click.option("--jobs", default=1, show_default=True, type=click.IntRange(min=1),
              help="Experiments run in parallel by the queue (seconds per row only with 1).")
@click.option("--tag", default=None, help="Suffix of the experiment names (default: date and time).")
@click.option("--metrics", "metrics_path", default="metrics/eval.json", show_default=True,
              help="The evaluation metrics file each experiment commits (dvc.yaml: cache: false).")
@click.option("--store-out", default="data/features.zarr", show_default=True,
              help="The extraction output whose hash tells whether the activation store was reused.")
def main(out: Path, only: str | None, seeds: str | None, eval_subset: str | None, holdout: float | None,
         jobs: int, tag: str | None, metrics_path: str, store_out: str) -> None:
    """Queue the ablation grid (`dvc exp run --queue -S ...`), run it, write a markdown table."""
    if holdout is not None and eval_subset is not None:
        raise click.UsageError("--holdout and --eval-subset are mutually exclusive")
    jobs_plan = plan(VARIANTS, only, seeds, eval_subset, tag or time.strftime("%Y%m%d-%H%M%S"), holdout)
    if not jobs_plan:
        raise click.ClickException("no variant to run (check --only)")
    for _, sets, name in jobs_plan:
        click.echo(f"queue {name}: {' '.join('-S ' + s for s in sets)}", err=True)
    start = time.time()
    try:
        baseline, exps, wall = run_queue(jobs_plan, jobs)
    except RuntimeError as exc:
        raise click.ClickException(str(exc)) from None
    mine = [e for e in exps.values() if e.name in {n for _, _, n in jobs_plan}]
    text, problems = table(jobs_plan, baseline, exps, metrics_path, store_out, durations(mine, start, jobs))
    for p in problems:
        click.echo(f"experiment failed: {p}", err=True)
    if not text:
        raise click.ClickException("no experiment succeeded")
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text(text)
    click.echo(text)
    click.echo(f"{len(mine)} experiment(s) in {wall:.0f} s; inspect with: dvc exp show", err=True)
    if problems:
        sys.exit(1)


if __name__ == "__main__":  # pragma: no cover
    sys.exit(main())
