"""`losa-demo-data`: write the deterministic synthetic demo dataset (videos + ActivityNet JSON)."""

from __future__ import annotations

from pathlib import Path

import click

from pipeline.config import load_params, section
from pipeline.errors import CliError, exit_code_of, is_user_error, message_of
from pipeline.knobs import Group, collect, knob_options
from stages.demo.config import DemoSettings

__all__ = ["DemoSettings", "GROUPS", "main"]


GROUPS = (Group("demo", DemoSettings),)


@click.command(context_settings={"help_option_names": ["-h", "--help"]})
@knob_options(*GROUPS)
@click.option("--params", "params_file", type=click.Path(dir_okay=False, path_type=Path), default=None,
              help="params.yaml whose 'demo' section supplies defaults.")
def main(params_file: Path | None, **cli) -> None:
    """Generate the synthetic temporal-action-localization demo dataset in OUT."""
    from stages.demo.data import generate_demo

    try:
        defaults = section(load_params(params_file), "demo", str(params_file)) if params_file else {}
        opts = DemoSettings.from_dict(collect(cli, GROUPS, defaults, where="demo", source=str(params_file))["demo"])
        if opts.out_dir is None:
            raise click.UsageError("missing --out")
        summary = generate_demo(**{f: getattr(opts, f) for f in opts.to_dict()})
    except click.ClickException:
        raise
    except Exception as exc:
        if not is_user_error(exc):
            raise  # a bug: keep the traceback
        raise CliError(message_of(exc), exit_code_of(exc)) from exc
    click.echo(summary.describe())


if __name__ == "__main__":  # pragma: no cover
    main()
