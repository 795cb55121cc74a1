"""``losa-probe``: rank stored layers with per-layer linear probes (seconds on a CPU)."""
from __future__ import annotations

import json
from pathlib import Path
from typing import Literal

import click

from losa.schema import knob, settings
from pipeline.config import load_params, section
from pipeline.errors import handle_user_errors
from pipeline.knobs import Group, collect, knob_options
from stages.errors import StageError
from stages.threads import ThreadSettings, apply_threads

__all__ = ["GROUPS", "ProbeSettings", "main"]


@settings(what="probe", error=StageError)
class ProbeSettings:
    """Knobs of losa-probe (params.yaml section ``probe``)."""

    store: Path | None = knob(None, "Activation store (.zarr or .h5).")
    annotations: Path | None = knob(None, "ActivityNet JSON, THUMOS folder or CSV.")
    classes: Path | None = knob(None, "Class list file (one per line).")
    train_subset: str = knob("training", "Subset the probes are fitted on.")
    test_subset: str = knob("testing", "Subset the probes are scored on.")
    layers: str = knob("", "Comma-separated layers to probe (default: all stored).")
    max_steps_per_video: int = knob(2000, "Steps sampled per video for fitting.", ge=1)
    C: float = knob(1.0, "Inverse L2 strength of the logistic regression.", gt=0, flag="c")
    input_norm: Literal["none", "sequence"] = knob(
        "none", "sequence: subtract each video's mean feature first (as train.input_norm).")
    holdout: float = knob(0.0, "Fit on the rest of the training subset and score on this seeded fraction of "
                               "it (the test subset is then not read; train.holdout uses the same split).",
                          ge=0, lt=1)
    holdout_seed: int = knob(0, "Seed of the held-out split.")
    out: Path | None = knob(None, "Write the results JSON here.")
    plot: Path | None = knob(None, "Write a bar-chart PNG here.")


GROUPS = (Group("probe", ProbeSettings, shown={"layers": "all stored"}), Group("runtime", ThreadSettings))


@click.command(context_settings={"help_option_names": ["-h", "--help"]})
@knob_options(*GROUPS)
@click.option("--params", "params_file", default=None, type=click.Path(dir_okay=False, path_type=Path),
              help="params.yaml; section 'probe'.")
@handle_user_errors
def main(params_file, **cli):
    """Fit a logistic-regression probe per stored layer (step → class/background) and rank them."""
    defaults = section(load_params(params_file), "probe", str(params_file)) if params_file else {}
    vals = collect(cli, GROUPS, defaults, where="probe", source=str(params_file))
    opts = ProbeSettings.from_dict(vals["probe"])
    for name in ("store", "annotations"):
        if getattr(opts, name) is None:
            raise click.UsageError(f"missing --{name}")
    apply_threads(ThreadSettings.from_dict(vals["runtime"]).threads)
    from stages.data.annotations import load_annotations
    from stages.tools.probe import format_probe_table, plot_probe, run_probe
    from storage import open_store

    layers = [int(x) for x in str(opts.layers).split(",") if x.strip()] or None
    reader = open_store(opts.store)
    ann = load_annotations(opts.annotations, classes=opts.classes)
    results = run_probe(reader, ann, opts.train_subset, opts.test_subset, layers=layers,
                        max_steps_per_video=opts.max_steps_per_video, C=opts.C,
                        input_norm=opts.input_norm, holdout=opts.holdout,
                        holdout_seed=opts.holdout_seed)
    click.echo(format_probe_table(results))
    if opts.out:
        opts.out.parent.mkdir(parents=True, exist_ok=True)
        opts.out.write_text(json.dumps([r.to_dict() for r in results], indent=2) + "\n")
    if opts.plot:
        opts.plot.parent.mkdir(parents=True, exist_ok=True)
        plot_probe(results, opts.plot)


if __name__ == "__main__":  # pragma: no cover
    main()
