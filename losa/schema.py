"""The knob schema: every setting of every stage is defined once, as a field of a settings class.

A settings class is a pydantic (v2) dataclass made with :func:`settings`; each field is declared
with :func:`knob` — name, type (``Literal[...]`` for a choice list), default, range (``ge``/``gt``/
``le``/``lt``) and a one-line help.  From that single definition come

* validation (pydantic) with one-line errors of the class's own error type, naming the setting;
* ``from_dict`` / ``to_dict`` (JSON round trip; an unknown key is reported with the closest name);
* the click options of the CLIs, the params.yaml sections and docs/options.md (``pipeline/knobs.py``).

Cross-field rules (e.g. ``cells == t_sub * grid * grid``) stay in each class's ``__post_init__``;
a ``ValueError`` raised there reaches the caller with its own message.

Torch-free on purpose: the CLIs build their options from these classes without importing torch,
so ``--help`` stays fast.
"""
from __future__ import annotations

import dataclasses
import difflib
import functools
import typing
from collections.abc import Mapping
from typing import Any, Literal, get_args, get_origin

import pydantic.dataclasses
from pydantic import ConfigDict, Field, TypeAdapter, ValidationError

from losa.errors import LosaError

__all__ = ["Knob", "closest", "describe", "from_mapping", "knob", "settings", "to_plain", "unknown_key"]

_CONFIG = ConfigDict(extra="forbid", validate_default=True, arbitrary_types_allowed=True)


def knob(default: Any = dataclasses.MISSING, help: str = "", *, flag: str | None = None, cli: bool = True,
         aliases: tuple[str, ...] = (), default_factory: Any = None, **constraints: Any) -> Any:
    """One setting: ``default`` (or ``default_factory``), ``help`` (one line) and range constraints
    (``ge``, ``gt``, ``le``, ``lt``).  ``flag``: the command-line / params.yaml name when it differs from
    the field name (``tapped_layers`` ↔ ``--layers``); ``cli=False``: a setting derived from the
    data (e.g. the store's channel count), not offered on the command line; ``aliases``: further
    flag names (``--results`` for ``--predictions``)."""
    extra: dict[str, Any] = {}
    if flag:
        extra["flag"] = flag
    if not cli:
        extra["cli"] = False
    if aliases:
        extra["aliases"] = list(aliases)
    kw: dict[str, Any] = dict(description=help, json_schema_extra=extra or None, **constraints)
    if default_factory is not None:
        return Field(default_factory=default_factory, **kw)
    return Field(default, **kw) if default is not dataclasses.MISSING else Field(**kw)


def settings(*, what: str, error: type[Exception] = LosaError, frozen: bool = False):
    """Class decorator: a pydantic dataclass whose validation errors are raised as ``error`` with one
    line ``"<what> setting <name> <value>: <reason>"``; adds ``from_dict`` / ``to_dict`` unless the
    class defines its own."""

    def wrap(cls: type) -> type:
        pyd = pydantic.dataclasses.dataclass(cls, frozen=frozen, config=_CONFIG)
        init = pyd.__init__

        @functools.wraps(init)
        def __init__(self, *args: Any, **kwargs: Any) -> None:  # noqa: N807
            try:
                init(self, *args, **kwargs)
            except ValidationError as exc:
                raise _as_error(exc, pyd, what, error) from None

        pyd.__init__ = __init__
        pyd.__knob_what__ = what
        pyd.__knob_error__ = error
        if "to_dict" not in cls.__dict__:
            pyd.to_dict = lambda self: to_plain(self)
        if "from_dict" not in cls.__dict__:
            pyd.from_dict = classmethod(lambda c, d=None: from_mapping(c, d))
        return pyd

    return wrap


# ------------------------------------------------------------------------------------ errors
def closest(name: str, valid: typing.Iterable[str]) -> str | None:
    """The valid name nearest to ``name`` (difflib), or None when nothing is close."""
    hits = difflib.get_close_matches(str(name), sorted(valid), n=1, cutoff=0.5)
    return hits[0] if hits else None


def unknown_key(key: str, valid: typing.Iterable[str], where: str) -> str:
    """``unknown <where> 'lr_rate' (closest valid name: 'lr')`` — one line."""
    near = closest(key, valid)
    hint = f" (closest valid name: '{near}')" if near else f" (valid: {', '.join(sorted(valid))})"
    return f"unknown {where} '{key}'{hint}"


def _choices_text(expected: str) -> str:
    return expected.replace("'", "").replace(" or ", ", ")


def _field_path(cls: type, loc: tuple) -> list:
    """The part of an error location that names settings (drops pydantic's union-member tags such
    as ``bool`` in ``cache_features.bool``); list indices are kept."""
    out, owner = [], cls
    for part in loc:
        fields = getattr(owner, "__pydantic_fields__", None)
        if isinstance(part, int):
            out.append(part)
        elif fields is not None and part in fields:
            out.append(part)
            ann = fields[part].annotation
            owner = ann if dataclasses.is_dataclass(ann) else None
        elif fields is not None or not out:
            out.append(part)
    return out


def _as_error(exc: ValidationError, cls: type, what: str, error: type[Exception]) -> Exception:
    err = exc.errors(include_url=False)[0]
    loc = ".".join(str(p) for p in _field_path(cls, err["loc"]))
    kind, value, msg = err["type"], err.get("input"), err["msg"]
    if kind in ("value_error", "assertion_error") and "error" in err.get("ctx", {}):
        inner = err["ctx"]["error"]
        return inner if isinstance(inner, error) else error(str(inner))
    if kind == "unexpected_keyword_argument":
        owner = cls  # a key of a nested settings mapping (train.nms.sigmaa) is named inside it
        for part in err["loc"][:-1]:
            sub = getattr(owner, "__pydantic_fields__", {}).get(str(part))
            owner = sub.annotation if sub is not None and dataclasses.is_dataclass(sub.annotation) else None
            if owner is None:
                break
        if owner is not None and owner is not cls:
            sub_what = getattr(owner, "__knob_what__", what)
            return error(unknown_key(str(err["loc"][-1]), field_names(owner), f"{sub_what} setting"))
        return error(unknown_key(loc, field_names(cls), f"{what} setting"))
    if kind == "literal_error":
        return error(f"{what} setting {loc} {value!r} is not one of: {_choices_text(err['ctx']['expected'])}")
    return error(f"{what} setting {loc}={value!r}: {msg[:1].lower()}{msg[1:]}")


# ------------------------------------------------------------------------------ dict round trip
def field_names(cls: type) -> list[str]:
    return [f.name for f in dataclasses.fields(cls)]


def from_mapping(cls: type, d: Mapping[str, Any] | None) -> Any:
    """``cls(**d)`` after checking the keys: an unknown one raises the class's error naming it and
    the closest valid name."""
    d = dict(d or {})
    names = field_names(cls)
    error = getattr(cls, "__knob_error__", LosaError)
    what = getattr(cls, "__knob_what__", cls.__name__)
    unknown = sorted(str(k) for k in d if k not in names)
    if unknown:
        raise error("; ".join(unknown_key(k, names, f"{what} setting") for k in unknown))
    return cls(**d)


def to_plain(obj: Any) -> dict[str, Any]:
    """JSON-ready dict of a settings object (tuples → lists, paths → str, nested settings → dicts)."""
    return TypeAdapter(type(obj)).dump_python(obj, mode="json")


# ------------------------------------------------------------------------------- introspection
@dataclasses.dataclass(frozen=True)
class Knob:
    """What the CLI / params / docs layers need to know about one setting."""

    name: str  # field name
    flag: str  # command-line / params key (underscores)
    annotation: Any
    default: Any  # dataclasses.MISSING when required
    help: str
    cli: bool
    bounds: dict[str, Any]  # ge / gt / le / lt
    aliases: tuple[str, ...] = ()

    @property
    def choices(self) -> tuple[Any, ...] | None:
        """Allowed values of a ``Literal`` (also inside ``Optional``), else None."""
        lit = _literal(self.annotation)
        return get_args(lit) if lit is not None else None

    @property
    def optional(self) -> bool:
        return type(None) in get_args(self.annotation)

    @property
    def base(self) -> Any:
        """The annotation without ``None`` (``int | None`` → ``int``)."""
        args = [a for a in get_args(self.annotation) if a is not type(None)]
        if get_origin(self.annotation) in (typing.Union, _UnionType) and len(args) == 1:
            return args[0]
        return self.annotation


_UnionType = type(int | None)


def _literal(ann: Any) -> Any:
    if get_origin(ann) is Literal:
        return ann
    if get_origin(ann) in (typing.Union, _UnionType):
        lits = [a for a in get_args(ann) if get_origin(a) is Literal]
        return lits[0] if len(lits) == 1 else None
    return None


def describe(cls: type) -> list[Knob]:
    """The knobs of a settings class, in field order."""
    out = []
    for name, info in cls.__pydantic_fields__.items():
        extra = info.json_schema_extra if isinstance(info.json_schema_extra, dict) else {}
        if info.default_factory is not None:
            default = info.default_factory()
        elif info.default is pydantic_core_undefined():
            default = dataclasses.MISSING
        else:
            default = info.default
        bounds = {}
        for m in info.metadata:
            for b in ("ge", "gt", "le", "lt"):
                if getattr(m, b, None) is not None:
                    bounds[b] = getattr(m, b)
        out.append(Knob(name, str(extra.get("flag", name)), info.annotation, default, info.description or "",
                        bool(extra.get("cli", True)), bounds, tuple(extra.get("aliases", ()))))
    return out


def pydantic_core_undefined() -> Any:
    from pydantic_core import PydanticUndefined

    return PydanticUndefined

