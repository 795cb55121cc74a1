"""``losa-probe``: rank stored layers with per-layer linear probes (seconds on a CPU)."""
from __future__ import annotations

import json
from pathlib import Path

import click

from pipeline.config import load_params, merge_cli, section
from pipeline.errors import handle_user_errors
from stages.data.annotations import load_annotations
from stages.tools.probe import format_probe_table, plot_probe, run_probe
from storage import open_store


@click.command(context_settings={"help_option_names": ["-h", "--help"]})
@click.option("--store", "store_path", required=True, type=click.Path(exists=True), help="Activation store (.zarr or .h5).")
@click.option("--annotations", required=True, type=click.Path(exists=True), help="ActivityNet JSON, THUMOS folder or CSV.")
@click.option("--classes", type=click.Path(exists=True), default=None, help="Class list file (one per line).")
@click.option("--train-subset", default="training", show_default=True)
@click.option("--test-subset", default="testing", show_default=True)
@click.option("--layers", default="", help="Comma-separated layers to probe (default: all stored).")
@click.option("--max-steps-per-video", default=2000, show_default=True, type=int)
@click.option("--c", "C", default=1.0, show_default=True, type=float, help="Inverse L2 strength.")
@click.option("--input-norm", type=click.Choice(["none", "sequence"]), default="none", show_default=True,
              help="sequence: subtract each video's mean feature first (as train.input_norm).")
@click.option("--holdout", default=0.0, show_default=True, type=float,
              help="Fit on the rest of --train-subset and score on this seeded fraction of it "
                   "(--test-subset is then not read; train.holdout uses the same split).")
@click.option("--holdout-seed", default=0, show_default=True, type=int, help="Seed of the held-out split.")
@click.option("--out", default=None, type=click.Path(), help="Write the results JSON here.")
@click.option("--plot", default=None, type=click.Path(), help="Write a bar-chart PNG here.")
@click.option("--params", "params_file", default=None, type=click.Path(), help="params.yaml; section 'probe'.")
@click.pass_context
@handle_user_errors
def main(ctx, params_file, **opts):
    """Fit a logistic-regression probe per stored layer (step → class/background) and rank them."""
    if params_file:
        opts = merge_cli(ctx, section(load_params(params_file), "probe", params_file), opts)
    layers = [int(x) for x in str(opts["layers"]).split(",") if x.strip()] or None
    reader = open_store(opts["store_path"])
    ann = load_annotations(opts["annotations"], classes=opts["classes"])
    results = run_probe(reader, ann, opts["train_subset"], opts["test_subset"], layers=layers,
                        max_steps_per_video=opts["max_steps_per_video"], C=opts["C"],
                        input_norm=opts["input_norm"], holdout=opts["holdout"],
                        holdout_seed=opts["holdout_seed"])
    click.echo(format_probe_table(results))
    if opts["out"]:
        Path(opts["out"]).parent.mkdir(parents=True, exist_ok=True)
        Path(opts["out"]).write_text(json.dumps([r.to_dict() for r in results], indent=2) + "\n")
    if opts["plot"]:
        Path(opts["plot"]).parent.mkdir(parents=True, exist_ok=True)
        plot_probe(results, opts["plot"])
