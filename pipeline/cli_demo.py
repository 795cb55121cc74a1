"""`losa-demo-data`: write the deterministic synthetic demo dataset (videos + ActivityNet JSON)."""

from __future__ import annotations

from pathlib import Path
from typing import Literal

import click

from pipeline.errors import CliError, exit_code_of, is_user_error, message_of

from losa.schema import knob, settings
from pipeline.config import load_params, section
from pipeline.knobs import Group, collect, knob_options
from stages.errors import StageError

__all__ = ["DemoSettings", "GROUPS", "main"]


@settings(what="demo", error=StageError)
class DemoSettings:
    """Knobs of the synthetic demo dataset (params.yaml section ``demo``); cross-checks (even size,
    lengths) are made by `stages.demo.data.plan_demo`."""

    out_dir: Path | None = knob(None, "Output folder (videos/, annotations.json, classes.txt are written inside).",
                                flag="out")
    num_videos: int = knob(32, "Videos to generate (at least one training and one testing).", ge=2)
    seed: int = knob(0, "Same seed → identical dataset.")
    fps: float = knob(15.0, "Frames per second.", gt=0)
    size: int = knob(112, "Frame width = height (even, >= 32).", ge=32)
    min_len: float = knob(20.0, "Shortest video (s).", gt=0)
    max_len: float = knob(45.0, "Longest video (s).", gt=0)
    test_fraction: float = knob(0.25, "Fraction of videos in the testing subset.", gt=0, lt=1)
    crf: int = knob(23, "x264 quality (0 = lossless, 51 = worst).", ge=0, le=51)
    workers: int = knob(1, "Parallel processes (output does not depend on it).", ge=1)
    clutter: Literal["low", "high"] = knob("low", "Scene difficulty: low suits random-weight backbones, high "
                                                  "pretrained ones.")


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
