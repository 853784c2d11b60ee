"""Loading ``params.yaml`` into :class:`~vesselseg.config.sections.Params`: strict parsing,
``section.key=value`` overrides, option values, flattening, and the one-line error messages.

Any validation failure is one :class:`ConfigError` line naming the dotted key.
"""

from __future__ import annotations

import dataclasses
import typing
from collections.abc import Iterable, Iterator
from pathlib import Path
from typing import Any, Literal

import pydantic

from vesselseg.config.sections import Params
from vesselseg.errors import ConfigError


def load_params(path: str | Path = "params.yaml", overrides: list[str] | None = None) -> Params:
    """Load ``params.yaml`` strictly, apply ``section.key=value`` overrides and validate."""
    import yaml

    path = Path(path)
    if not path.is_file():
        raise ConfigError(f"{path}: params file not found")
    try:
        raw = yaml.safe_load(path.read_text()) or {}
    except yaml.YAMLError as exc:
        mark = getattr(exc, "problem_mark", None)
        where = f" (line {mark.line + 1})" if mark else ""
        raise ConfigError(f"{path}: not valid YAML{where}") from None
    params = params_from_dict(raw, source=str(path), strict=True)
    return apply_overrides(params, overrides or [])


def params_from_dict(raw: Any, source: str = "params", strict: bool = True) -> Params:
    """Build :class:`Params` from a nested dict; ``strict`` requires every key to be present
    (otherwise a missing key takes its default). Unknown keys are refused either way."""
    return _build(Params, raw, prefix="", source=source, strict=strict)


def section_from_dict(cls: type, raw: Any, section: str, source: str) -> Any:
    """Build one section dataclass (e.g. :class:`ModelConfig`) strictly from a dict."""
    return _build(cls, raw, prefix=f"{section}.", source=source, strict=True)


def params_to_dict(params: Any) -> dict[str, Any]:
    """Nested plain dict of a config dataclass (what goes to YAML and MLflow)."""
    return dataclasses.asdict(params)


def flatten(params: Any) -> dict[str, Any]:
    """``{"train.lr": 0.001, ...}`` for logging as MLflow params."""

    def walk(data: dict[str, Any], prefix: str) -> Iterator[tuple[str, Any]]:
        for key, value in data.items():
            if isinstance(value, dict):
                yield from walk(value, f"{prefix}{key}.")
            else:
                yield f"{prefix}{key}", value

    return dict(walk(params_to_dict(params), ""))


def apply_overrides(params: Params, overrides: list[str]) -> Params:
    """Apply ``section.key=value`` strings (value parsed as YAML) and re-validate."""
    import yaml

    data = params_to_dict(params)
    for item in overrides:
        if "=" not in item:
            raise ConfigError(f"override {item!r}: expected section.key=value")
        key, text = item.split("=", 1)
        parts = key.strip().split(".")
        if len(parts) != 2:
            raise ConfigError(f"override {key!r}: expected section.key")
        section, name = parts
        if section not in data or name not in data[section]:
            raise ConfigError(f"override {key!r}: unknown key")
        try:
            data[section][name] = yaml.safe_load(text)
        except yaml.YAMLError:
            raise ConfigError(f"override {key!r}: value {text!r} is not valid YAML") from None
    return params_from_dict(data, source="override", strict=True)


def with_values(params: Params, values: dict[str, Any]) -> Params:
    """Set ``{"section.key": value}`` pairs whose value is not None, re-validating.

    CLI options pass their values here so that they are checked like params.yaml entries.
    """
    data = params_to_dict(params)
    for key, value in values.items():
        if value is None:
            continue
        section, name = key.split(".")
        data[section][name] = value  # a tuple validates as a list
    return params_from_dict(data, source="option", strict=True)


def explicit_keys(
    params: Params, overrides: Iterable[str] = (), values: dict[str, Any] | None = None
) -> set[str]:
    """The dotted keys a user set on purpose, which a plan must not replace.

    params.yaml lists every key, so presence says nothing: a key counts as set when its value
    differs from the built-in default, when a ``--set`` override or a CLI option (a non-None
    entry of ``values``) names it, or when ``plan.keep`` lists it (to pin a default value).
    """
    defaults = flatten(Params())
    chosen = {k for k, v in flatten(params).items() if v != defaults.get(k)}
    chosen |= {item.split("=", 1)[0].strip() for item in overrides if "=" in item}
    chosen |= {k for k, v in (values or {}).items() if v is not None}
    return chosen | set(params.plan.keep)


def multiview_params(params: Params) -> Params:
    """``params`` for training the multiview 2D model: the ``multiview`` section applied over
    ``model``, ``data`` and ``train``."""
    mv = params.multiview
    return with_values(
        params,
        {
            "model.name": "unet2d",
            "model.norm": mv.norm,
            "model.base_channels": mv.base_channels,
            "model.depth": mv.depth,
            "data.crop_size": mv.crop_size,
            "train.batch_size": mv.batch_size,
            "data.samples_per_volume": mv.samples_per_volume,
            "train.max_epochs": mv.max_epochs,
            "train.lr": mv.lr,
        },
    )


def as_triple(value: int | list[int]) -> tuple[int, int, int]:
    """Normalise an ``int | [z, y, x]`` size to a (z, y, x) tuple."""
    if isinstance(value, int):
        return (value, value, value)
    return (int(value[0]), int(value[1]), int(value[2]))


# --------------------------------------------------------------------------- validation

_BOUNDS = {"ge": ">=", "gt": ">", "le": "<=", "lt": "<"}


def _build(cls: type, raw: Any, prefix: str, source: str, strict: bool) -> Any:
    try:
        obj = pydantic.TypeAdapter(cls).validate_python(raw)
    except pydantic.ValidationError as exc:
        raise ConfigError(f"{source}: {_describe(exc, cls, raw, prefix)}") from None
    if strict and (key := _missing_key(cls, raw, prefix)):
        raise ConfigError(f"{source}: missing key {key}")
    return obj


def _missing_key(cls: type, raw: dict[str, Any], prefix: str) -> str | None:
    for name, hint in typing.get_type_hints(cls).items():
        if name not in raw:
            return prefix + name
        if dataclasses.is_dataclass(hint) and (key := _missing_key(hint, raw[name], name + ".")):
            return prefix + key
    return None


def _describe(exc: pydantic.ValidationError, cls: type, raw: Any, prefix: str) -> str:
    """One line for the first failing key. Of its errors (one per member of a union) the
    deepest: ``[4, 4, 4]`` for a size fails as ``>= 8`` rather than as "not an int"."""
    errors = exc.errors()
    first = _path(cls, errors[0]["loc"])[0]
    same_key = [e for e in errors if _path(cls, e["loc"])[0] == first]
    error = max(same_key, key=lambda e: len(e["loc"]))
    names, hint = _path(cls, error["loc"])
    key, ctx = prefix + ".".join(names), error.get("ctx", {})
    if error["type"] in ("unexpected_keyword_argument", "invalid_key"):
        return f"unknown key {key}{'.' if names else ''}{error['loc'][len(names)]}"
    if error["type"] == "value_error":  # a relation within section ``hint``
        section = f"{key}." if names else prefix
        return str(ctx["error"]).format(**{n: section + n for n in typing.get_type_hints(hint)})
    value = raw
    for name in names:
        value = value[name]
    for bound, sign in _BOUNDS.items():
        if bound in ctx:
            return f"{key} must be {sign} {ctx[bound]}, got {value!r}"
    if dataclasses.is_dataclass(hint):
        return f"{key.rstrip('.') or 'top level'} must be a mapping, got {type(value).__name__}"
    return f"{key} must be {_type_name(hint)}, got {value!r}"


def _path(cls: type, loc: tuple[int | str, ...]) -> tuple[list[str], Any]:
    """The field names that ``loc`` starts with (not list indices or union members) and the
    type of the last one, without its ``Annotated`` constraints."""
    names: list[str] = []
    hint: Any = cls
    for item in loc:
        hints = typing.get_type_hints(hint) if dataclasses.is_dataclass(hint) else {}
        if item not in hints:
            break
        names.append(str(item))
        hint = hints[item]
    return names, hint


def _type_name(hint: Any) -> str:
    origin, args = typing.get_origin(hint), typing.get_args(hint)
    if origin is Literal:
        return "one of " + ", ".join(repr(a) for a in args)
    if origin is list:
        return f"a list of {_type_name(args[0])}"
    if args:  # a union
        return " or ".join(_type_name(a) for a in args)
    return getattr(hint, "__name__", str(hint))
