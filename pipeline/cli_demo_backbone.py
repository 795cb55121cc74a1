"""`losa-demo-backbone`: pre-train the demo's small backbone on trimmed clips of its training videos
and save it as an official-layout VideoMAEv2 checkpoint (`stages.demo.backbone`)."""
from __future__ import annotations

from pathlib import Path

import click

from pipeline.config import load_params, section
from pipeline.errors import handle_user_errors
from pipeline.knobs import Group, collect, knob_options
from stages.demo.backbone_config import BackboneTrainSettings
from stages.threads import ThreadSettings, apply_threads

__all__ = ["GROUPS", "main"]

GROUPS = (Group("demo_backbone", BackboneTrainSettings), Group("runtime", ThreadSettings))


@click.command(context_settings={"help_option_names": ["-h", "--help"]})
@knob_options(*GROUPS)
@click.option("--params", "params_file", default=None, type=click.Path(dir_okay=False, path_type=Path),
              help="params.yaml; section 'demo_backbone'.")
@handle_user_errors
def main(params_file, **cli):
    """Train a backbone preset on labelled clips (direction-blind labels by default) → .pth."""
    defaults = section(load_params(params_file), "demo_backbone", str(params_file)) if params_file else {}
    vals = collect(cli, GROUPS, defaults, where="demo_backbone", source=str(params_file))
    opts = BackboneTrainSettings.from_dict(vals["demo_backbone"])
    for name in ("videos", "annotations", "out"):
        if getattr(opts, name) is None:
            raise click.UsageError(f"missing --{name}")
    apply_threads(ThreadSettings.from_dict(vals["runtime"]).threads)
    from stages.demo.backbone import pretrain_backbone

    def report(row: dict) -> None:
        click.echo(f"step {row['step']}: loss {row['loss']:.3f}, accuracy {row['accuracy']:.3f}")

    result = pretrain_backbone(opts.videos, opts.annotations, opts, progress=report if opts.progress else None)
    click.echo(result.describe())


if __name__ == "__main__":  # pragma: no cover
    main()
