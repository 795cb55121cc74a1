"""params.yaml handling shared by the CLIs.

Every CLI accepts ``--params FILE`` (default: none).  The file's section for that stage supplies
defaults; options given explicitly on the command line win.  This is what makes
``dvc exp run -S train.model.mode=head-only`` work: DVC edits ``params.yaml`` and the stage's
command re-reads it.
"""
from __future__ import annotations

from pathlib import Path
from typing import Any, Mapping

import click
import yaml


class ParamsError(ValueError):
    """A params file that cannot be used."""


def load_params(path: str | Path) -> dict:
    """Read a YAML params file; one clear error when missing or malformed."""
    p = Path(path)
    if not p.is_file():
        raise ParamsError(f"params file not found: {p}")
    try:
        data = yaml.safe_load(p.read_text(encoding="utf-8"))
    except yaml.YAMLError as exc:
        raise ParamsError(f"{p}: not valid YAML ({exc.__class__.__name__})") from exc
    if data is None:
        return {}
    if not isinstance(data, dict):
        raise ParamsError(f"{p}: top level must be a mapping of stage sections")
    return data


def section(params: Mapping[str, Any], name: str, source: str = "params") -> dict:
    """Return ``params[name]`` (a mapping), or an empty dict when absent."""
    sec = params.get(name, {}) or {}
    if not isinstance(sec, dict):
        raise ParamsError(f"{source}: section '{name}' must be a mapping")
    return dict(sec)


def flatten(d: Mapping[str, Any], prefix: str = "") -> dict[str, Any]:
    """``{"a": {"b": 1}}`` → ``{"a.b": 1}`` (used to show effective settings)."""
    out: dict[str, Any] = {}
    for k, v in d.items():
        key = f"{prefix}{k}"
        if isinstance(v, Mapping):
            out.update(flatten(v, key + "."))
        else:
            out[key] = v
    return out


def merge_cli(ctx: click.Context, defaults: Mapping[str, Any], cli_values: Mapping[str, Any]) -> dict:
    """Merge a params section with click options.

    A value comes from the command line when the user typed it, else from ``defaults`` (the params
    section, keys spelled like the click parameter names with ``_`` or ``-``), else the click default.
    Keys in ``defaults`` that match no option raise an error so typos in params.yaml are caught.
    """
    names = set(cli_values)
    # A params key may be spelled like the parameter name or like its long flag (``dtype`` for
    # ``--dtype`` stored as ``store_dtype``).
    aliases = {}
    for p in ctx.command.params:
        for opt in getattr(p, "opts", []):
            if opt.startswith("--"):
                aliases[opt[2:].replace("-", "_")] = p.name
    norm = {aliases.get(str(k).replace("-", "_"), str(k).replace("-", "_")): v for k, v in defaults.items()}
    unknown = sorted(k for k in norm if k not in names)
    if unknown:
        raise ParamsError(f"unknown key(s) in params section: {', '.join(unknown)}")
    params_by_name = {p.name: p for p in ctx.command.params}
    merged = {}
    for name, value in cli_values.items():
        src = ctx.get_parameter_source(name)
        typed = src is not None and src.name in ("COMMANDLINE", "ENVIRONMENT")
        if typed or name not in norm:
            merged[name] = value
            continue
        raw = norm[name]
        if isinstance(raw, (list, tuple)) and not getattr(params_by_name.get(name), "multiple", False):
            raw = ",".join(str(x) for x in raw)  # e.g. layers: [4, 8] → "4,8"
        param = params_by_name.get(name)
        try:
            merged[name] = param.type_cast_value(ctx, raw) if (param is not None and raw is not None) else raw
        except click.BadParameter as exc:
            raise ParamsError(f"params key '{name}': {exc.message}") from exc
    return merged
