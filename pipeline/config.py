"""params.yaml handling shared by the CLIs.

Every CLI accepts ``--params FILE`` (default: none).  The file's section for that stage supplies
defaults; options given explicitly on the command line win.  This is what makes
``dvc exp run -S train.model=head-only`` work: DVC edits ``params.yaml`` and the stage's
command re-reads it.  Which keys a section may hold, and how they merge with the command line, is
derived from the knob schema (`pipeline.knobs`).
"""
from __future__ import annotations

from pathlib import Path
from typing import Any, Mapping

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
