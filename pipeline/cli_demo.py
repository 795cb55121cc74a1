"""`losa-demo-data`: write the deterministic synthetic demo dataset (videos + ActivityNet JSON)."""

from __future__ import annotations

from pathlib import Path

import click

from pipeline.config import load_params, merge_cli, section
from stages.demo.data import generate_demo


@click.command(context_settings={"help_option_names": ["-h", "--help"]})
@click.option("--out", "out_dir", type=click.Path(file_okay=False, path_type=Path), required=True,
              help="Output folder (videos/, annotations.json, classes.txt are written inside).")
@click.option("--num-videos", type=click.IntRange(min=2), default=32, show_default=True)
@click.option("--seed", type=int, default=0, show_default=True, help="Same seed → identical dataset.")
@click.option("--fps", type=float, default=15.0, show_default=True)
@click.option("--size", type=int, default=112, show_default=True, help="Frame width = height (even).")
@click.option("--min-len", type=float, default=20.0, show_default=True, help="Shortest video (s).")
@click.option("--max-len", type=float, default=45.0, show_default=True, help="Longest video (s).")
@click.option("--test-fraction", type=float, default=0.25, show_default=True)
@click.option("--crf", type=click.IntRange(0, 51), default=23, show_default=True, help="x264 quality.")
@click.option("--workers", type=click.IntRange(min=1), default=1, show_default=True,
              help="Parallel processes (output does not depend on it).")
@click.option("--clutter", type=click.Choice(["low", "high"]), default="low", show_default=True,
              help="Scene difficulty: low suits random-weight backbones, high pretrained ones.")
@click.option("--params", "params_file", type=click.Path(dir_okay=False, path_type=Path), default=None,
              help="params.yaml whose 'demo' section supplies defaults.")
@click.pass_context
def main(ctx: click.Context, params_file: Path | None, **opts) -> None:
    """Generate the synthetic temporal-action-localization demo dataset in OUT."""
    try:
        if params_file is not None:
            opts = merge_cli(ctx, section(load_params(params_file), "demo", str(params_file)), opts)
        summary = generate_demo(opts.pop("out_dir"), **opts)
    except (ValueError, OSError) as exc:
        raise click.ClickException(str(exc)) from exc
    click.echo(summary.describe())


if __name__ == "__main__":  # pragma: no cover
    main()
