"""Ablations that re-use the activation cache: ``python -m pipeline.ablate``.

Each variant is one ``dvc exp run -S key=value ...``: DVC sees that only ``train`` params changed, so
it re-runs train → evaluate (and the timeline) and **skips extraction** (its deps and params are
unchanged).  The script reads each experiment's ``metrics/eval.json``, checks in DVC's output that
the extract stage was skipped, writes a markdown table (``metrics/ablation.md``) and finally restores
the workspace to the committed baseline (``git checkout`` of params/lock/metrics + ``dvc checkout``).
"""
from __future__ import annotations

import json
import subprocess
import sys
import time
from pathlib import Path

import click
import numpy as np

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


def _run(cmd: list[str]) -> str:
    proc = subprocess.run(cmd, capture_output=True, text=True)
    if proc.returncode != 0:
        raise click.ClickException(f"{' '.join(cmd)} failed:\n{proc.stdout[-2000:]}\n{proc.stderr[-2000:]}")
    return proc.stdout + proc.stderr


def _row(name: str, sets: list[str], runs: list[dict], seconds: float, skipped: bool) -> str:
    """One table row; with several seeds: mean per tIoU and mean ± std of the average mAP."""
    per_tiou = np.mean([r["mAP"] for r in runs], axis=0)
    avgs = np.array([r["average_mAP"] for r in runs])
    maps = " | ".join(f"{100 * m:.1f}" for m in per_tiou)
    avg = f"{100 * avgs.mean():.1f}" + (f" ± {100 * avgs.std(ddof=1):.1f}" if len(avgs) > 1 else "")
    motion = " | ".join(motion_columns(runs))
    return (f"| {name} | `{' '.join(sets)}` | {maps} | **{avg}** | {motion} | {seconds:.0f} | "
            f"{'yes' if skipped else 'NO'} |")


@click.command(context_settings={"help_option_names": ["-h", "--help"]})
@click.option("--out", default="metrics/ablation.md", show_default=True, type=click.Path(path_type=Path))
@click.option("--only", default=None, help="Comma-separated variant names to run (default: all); names never contain commas.")
@click.option("--seeds", default=None,
              help="Comma-separated training seeds (adds -S train.seed=S); rows report mean ± std.")
@click.option("--keep-workspace", is_flag=True, help="Do not restore the committed baseline afterwards.")
def main(out: Path, only: str | None, seeds: str | None, keep_workspace: bool) -> None:
    """Run the ablation grid with `dvc exp run -S ...` and write a markdown table."""
    wanted = None if only is None else {s.strip() for s in only.split(",")}
    rows = []
    head = None
    try:
        for name, sets in VARIANTS:
            if wanted is not None and name not in wanted:
                continue
            runs, seconds, skipped = [], 0.0, True
            for seed in ([None] if seeds is None else [s.strip() for s in seeds.split(",")]):
                args = sets + ([] if seed is None else [f"train.seed={seed}"])
                click.echo(f"== {name}: dvc exp run {' '.join('-S ' + s for s in args)}", err=True)
                t0 = time.perf_counter()
                log = _run(["dvc", "exp", "run", *[a for s in args for a in ("-S", s)]])
                seconds += time.perf_counter() - t0
                skipped &= "Stage 'extract' didn't change, skipping" in log and "Running stage 'extract'" not in log
                runs.append(json.loads(Path("metrics/eval.json").read_text()))
            head = head or runs[0]["tious"]
            rows.append(_row(name, sets, runs, seconds, skipped))
            click.echo(rows[-1], err=True)
    finally:
        if not keep_workspace:
            subprocess.run(["git", "checkout", "--", "params.yaml", "dvc.lock", "metrics", "plots"], check=False)
            subprocess.run(["dvc", "checkout", "--quiet"], check=False)
    if not rows:
        raise click.ClickException("no variant ran (check --only)")
    header = ("| variant | dvc exp run -S | " + " | ".join(f"mAP@{t:g}" for t in head)
              + " | avg mAP | " + " | ".join(f"AP {c}" for c in MOTION_PAIR)
              + " | AP other classes | seconds | extract skipped |")
    sep = "|" + "---|" * (len(head) + 5 + len(MOTION_PAIR) + 1)
    table = "\n".join([header, sep, *rows]) + "\n"
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text(table)
    click.echo(table)


if __name__ == "__main__":  # pragma: no cover
    sys.exit(main())
