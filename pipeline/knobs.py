"""Command-line options and params.yaml sections derived from the knob schema (`losa.schema`).

A command lists its settings classes as :class:`Group` s; :func:`knob_options` turns every knob into
a click option (flag, type, choices, range and help from the schema; no default is restated: an
option not typed is ``None`` and the schema default applies) and :func:`collect` merges a params.yaml
section with the typed options (command line wins) into one mapping per group, ready for the
class's ``from_dict``.  A params key that names no knob is refused in one line with the closest
valid name.

Flag / key names: the knob's ``flag`` (its field name unless the schema says otherwise); a group
with a ``section`` ("head", "nms") is a nested mapping in params.yaml (``train.head.embd_dim``) and
prefixes its flags (``--head-embd-dim``).
"""
from __future__ import annotations

import dataclasses
from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, get_origin

import click

from losa.schema import Knob, closest, describe
from pipeline.config import ParamsError

__all__ = ["Group", "KnobOption", "collect", "group_knobs", "knob_options", "parse_text"]


@dataclass(frozen=True)
class Group:
    """The knobs of one settings class offered by a command.

    ``key``: name of this group in :func:`collect`'s result (and the click parameter prefix);
    ``section``: params sub-mapping and flag prefix ("" = keys sit in the stage section itself);
    ``skip``: fields not offered; ``raw``: fields passed through as text, which the command parses
    itself (e.g. ``layers: auto``); ``shown``: the default shown in ``--help`` where the command's
    behaviour differs from the class default (``auto``, "the deepest stored layer").
    """

    key: str
    cls: type
    section: str = ""
    skip: tuple[str, ...] = ()
    raw: tuple[str, ...] = ()
    shown: Mapping[str, str] = field(default_factory=dict)


def group_knobs(group: Group) -> list[Knob]:
    """Knobs of ``group`` that get an option: cli ones, not skipped, not nested settings classes."""
    return [k for k in describe(group.cls)
            if k.cli and k.name not in group.skip and not dataclasses.is_dataclass(k.base)]


def _flag(group: Group, k: Knob) -> str:
    return (f"{group.section}-" if group.section else "") + k.flag.replace("_", "-")


def _param_name(group: Group, k: Knob) -> str:
    return f"{group.key}__{k.name}"


def _show(value: Any) -> str:
    if value is None:
        return "none"
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, (list, tuple)):
        return ",".join(_show(v) for v in value) if all(not isinstance(v, (list, tuple)) for v in value) \
            else str([list(v) if isinstance(v, tuple) else v for v in value]).replace(" ", "")
    return str(value)


def _bounds(k: Knob) -> str:
    sym = {"ge": ">=", "gt": ">", "le": "<=", "lt": "<"}
    return ", ".join(f"{sym[b]} {v}" for b, v in k.bounds.items())


def _is_seq(ann: Any) -> bool:
    return get_origin(ann) in (list, tuple)


def parse_bool(text: str) -> bool | None:
    """True for 1/true/yes/on, False for 0/false/no/off (any case), else None."""
    low = str(text).strip().lower()
    return True if low in ("1", "true", "yes", "on") else False if low in ("0", "false", "no", "off") else None


def parse_text(k: Knob, text: str) -> Any:
    """A knob's value from command-line / params text: choices, numbers, booleans, ``none`` for an
    optional knob, comma or YAML lists (``8,16`` or ``[[0,4],[4,8]]``) for list knobs."""
    t = str(text).strip()
    if k.optional and t.lower() in ("none", "null"):
        return None
    if k.choices is not None:
        for c in k.choices:
            if str(c) == t or (isinstance(c, bool) and parse_bool(t) is c):  # true/on/yes, false/off/no
                return c
        raise ValueError(f"{t!r} is not one of: {', '.join(str(c) for c in k.choices)}")
    base = k.base
    if base is bool:
        low = t.lower()
        if low in ("1", "true", "yes", "on"):
            return True
        if low in ("0", "false", "no", "off"):
            return False
        raise ValueError(f"{t!r} is not true or false")
    if base is int:
        try:
            return int(t)
        except ValueError:
            raise ValueError(f"{t!r} is not an integer") from None
    if base is float:
        try:
            return float(t)
        except ValueError:
            raise ValueError(f"{t!r} is not a number") from None
    if base is Path:
        return Path(t)
    if _is_seq(base):
        import yaml

        try:
            value = yaml.safe_load(t if t.startswith("[") else f"[{t}]")
        except yaml.YAMLError:
            raise ValueError(f"{t!r} is not a list (e.g. 8,16 or [[0,4],[4,8]])") from None
        return value
    return t


class KnobType(click.ParamType):
    """click type of one knob: text parsed by :func:`parse_text` (values that are not text pass)."""

    def __init__(self, knob: Knob | None) -> None:
        self.knob = knob
        self.name = "text" if knob is None else (
            "choice" if knob.choices else getattr(knob.base, "__name__", "value").lower())

    def convert(self, value: Any, param: click.Parameter | None, ctx: click.Context | None) -> Any:
        if self.knob is None or not isinstance(value, str):
            return value
        try:
            return parse_text(self.knob, value)
        except ValueError as exc:
            self.fail(str(exc), param, ctx)

    def get_metavar(self, param: click.Parameter, ctx: click.Context | None = None) -> str | None:
        k = self.knob
        if k is None:
            return "TEXT"
        if k.choices is not None:
            return "[" + "|".join(str(c) for c in k.choices) + "]"
        if _is_seq(k.base):
            return "LIST"
        return {int: "INTEGER", float: "FLOAT", Path: "PATH"}.get(k.base, "TEXT")


class KnobOption(click.Option):
    """A click option made from a knob; ``params_key`` is its params.yaml key inside the stage section."""

    def __init__(self, *args: Any, params_key: str = "", knob: Knob | None = None, shown_default: str = "",
                 **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self.params_key = params_key
        self.knob = knob
        self.shown_default = shown_default


def knob_options(*groups: Group) -> Callable[[Callable], Callable]:
    """Decorator adding one click option per knob of ``groups`` (in schema order)."""
    specs = []
    for g in groups:
        for k in group_knobs(g):
            flag = _flag(g, k)
            quiet = k.default is dataclasses.MISSING or (k.default is None and k.base in (Path, str))
            shown = g.shown.get(k.name, "" if quiet else _show(k.default))
            rng = _bounds(k)
            help_text = k.help + (f" [default: {shown}" if shown != "" else " [") + (f"; {rng}]" if rng else "]")
            help_text = help_text.replace(" []", "")
            key = (f"{g.section}." if g.section else "") + k.flag
            kw: dict[str, Any] = dict(cls=KnobOption, default=None, help=help_text, params_key=key,
                                      knob=k, shown_default=shown)
            if k.base is bool and k.name not in g.raw:
                decls = [f"--{flag}/--no-{flag}", _param_name(g, k)]
            else:
                decls = [f"--{flag}", *(f"--{a.replace('_', '-')}" for a in k.aliases), _param_name(g, k)]
                kw["type"] = KnobType(None if k.name in g.raw else k)
            specs.append((decls, kw))

    def decorate(f: Callable) -> Callable:
        for decls, kw in reversed(specs):
            f = click.option(*decls, **kw)(f)
        return f

    return decorate


def _from_params(k: Knob | None, raw: Any, key: str, source: str) -> Any:
    if k is None or not isinstance(raw, str):
        return raw
    try:
        return parse_text(k, raw)
    except ValueError as exc:
        raise ParamsError(f"{source}: key '{key}': {exc}") from None


def _unknown(source: str, key: str, valid: Iterable[str]) -> ParamsError:
    near = closest(key.rsplit(".", 1)[-1], [v.rsplit(".", 1)[-1] for v in valid])
    hint = f" (closest valid name: '{near}')" if near else ""
    return ParamsError(f"{source}: unknown key '{key}'{hint}")


def collect(cli: Mapping[str, Any], groups: Iterable[Group], section: Mapping[str, Any] | None = None,
            *, where: str = "", source: str = "params") -> dict[str, dict[str, Any]]:
    """``{group key: {field: value}}`` from a params section (``where`` names it in errors, e.g.
    "train") and the options typed on the command line (they win).  Knobs given nowhere are absent,
    so each class's own default applies."""
    groups = list(groups)
    out: dict[str, dict[str, Any]] = {g.key: {} for g in groups}
    flat = {k.flag: (g, k) for g in groups if not g.section for k in group_knobs(g)}
    subs = {g.section: g for g in groups if g.section}
    prefix = f"{where}." if where else ""
    for key, raw in (section or {}).items():
        key = str(key)
        if key in flat:
            g, k = flat[key]
            out[g.key][k.name] = raw if k.name in g.raw else _from_params(k, raw, prefix + key, source)
        elif key in subs and (raw is None or isinstance(raw, Mapping)):
            g = subs[key]
            inner = {k.flag: k for k in group_knobs(g)}
            for sub_key, value in (raw or {}).items():
                if sub_key not in inner:
                    raise _unknown(source, f"{prefix}{key}.{sub_key}", inner)
                out[g.key][inner[sub_key].name] = _from_params(inner[sub_key], value, f"{prefix}{key}.{sub_key}",
                                                               source)
        elif key in subs:
            raise ParamsError(f"{source}: key '{prefix}{key}' must be a mapping")
        else:
            raise _unknown(source, prefix + key, [*flat, *subs])
    for g in groups:
        for k in group_knobs(g):
            value = cli.get(_param_name(g, k))
            if value is not None:
                out[g.key][k.name] = value
    return out

