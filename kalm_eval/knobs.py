"""Declarative configuration knobs: each settings dataclass states, per field, its type, accepted values and
whether it affects numbers. `from_mapping` builds and validates one from a config mapping, so every knob is checked
in one place, before any data is read or model loaded, with one error naming the knob and what it accepts.

    @dataclass(frozen=True)
    class Settings:
        depth: int = knob(100, minimum=1, doc="candidates reranked per query")
        tail: str = knob("first_stage", choices=("first_stage", "drop"))
        batch_size: int = knob(32, minimum=1, logged=True)   # logged, not keyed: does not change a number

    settings = from_mapping(Settings, {"depth": 20}, prefix="reranker")

Values are checked, never coerced: `4.5` for an int knob, `true` for an int knob, or `-1` below `minimum` are
errors. `keyed(settings)` is the part that goes into run signatures (logged knobs left out)."""

from __future__ import annotations

import dataclasses
import types
import typing
from collections.abc import Mapping, Sequence
from typing import Any, TypeVar

from kalm_eval.errors import ConfigError

T = TypeVar("T")
_MISSING = dataclasses.MISSING


def knob(default: Any = _MISSING, *, minimum: float | None = None, maximum: float | None = None,
         choices: Sequence[Any] | None = None, logged: bool = False, doc: str = "", factory: Any = _MISSING) -> Any:
    """A dataclass field with validation metadata (see module docstring)."""
    metadata = {"minimum": minimum, "maximum": maximum, "choices": tuple(choices) if choices else None,
                "logged": logged, "doc": doc}
    if factory is not _MISSING:
        return dataclasses.field(default_factory=factory, metadata=metadata)
    return dataclasses.field(default=default, metadata=metadata)


def from_mapping(cls: type[T], values: Mapping[str, Any] | None, *, prefix: str, ignore: Sequence[str] = ()) -> T:
    """Build `cls` from `values`, refusing unknown keys and values of the wrong type or range."""
    values = dict(values or {})
    names = {f.name for f in dataclasses.fields(cls)}
    unknown = sorted(k for k in values if k not in names and k not in ignore)
    if unknown:
        raise ConfigError(f"{prefix}.{unknown[0]}: unknown setting; known: {', '.join(sorted(names))}")
    hints = typing.get_type_hints(cls)
    kwargs = {}
    for f in dataclasses.fields(cls):
        if f.name not in values:
            if f.default is _MISSING and f.default_factory is _MISSING:
                raise ConfigError(f"{prefix}.{f.name}: required, no value given")
            continue
        kwargs[f.name] = check_value(f"{prefix}.{f.name}", values[f.name], hints[f.name], f.metadata)
    return cls(**kwargs)


def check_value(name: str, value: Any, annotation: Any, metadata: Mapping[str, Any] | None = None) -> Any:
    """`value` if it fits `annotation` and the knob's range/choices, else ConfigError naming `name`."""
    metadata = metadata or {}
    value = _check_type(name, value, annotation)
    choices = metadata.get("choices")
    if choices is not None and value is not None and value not in choices:
        raise ConfigError(f"{name}={value!r}: must be one of {', '.join(map(repr, choices))}")
    for item in (value if isinstance(value, tuple) else (value,)):
        if isinstance(item, (int, float)) and not isinstance(item, bool):
            low, high = metadata.get("minimum"), metadata.get("maximum")
            if low is not None and item < low:
                raise ConfigError(f"{name}={value!r}: must be >= {low}")
            if high is not None and item > high:
                raise ConfigError(f"{name}={value!r}: must be <= {high}")
    return value


def _type_name(annotation: Any) -> str:
    return getattr(annotation, "__name__", None) or str(annotation).replace("typing.", "")


def _check_type(name: str, value: Any, annotation: Any) -> Any:
    origin = typing.get_origin(annotation)
    args = typing.get_args(annotation)
    if origin in (typing.Union, types.UnionType):
        if value is None and type(None) in args:
            return None
        errors = []
        for option in (a for a in args if a is not type(None)):
            try:
                return _check_type(name, value, option)
            except ConfigError as err:
                errors.append(err)
        raise ConfigError(f"{name}={value!r}: expected {' or '.join(_type_name(a) for a in args)}")
    if annotation is Any:
        return value
    if dataclasses.is_dataclass(annotation):  # a nested settings block, e.g. one cascade step
        if isinstance(value, annotation):
            return value
        if not isinstance(value, Mapping):
            raise ConfigError(f"{name}={value!r}: expected a mapping of {', '.join(f.name for f in dataclasses.fields(annotation))}")
        return from_mapping(annotation, value, prefix=name)
    if origin is tuple:  # tuple[int, ...]: a list or tuple in the config
        if not isinstance(value, (list, tuple)):
            raise ConfigError(f"{name}={value!r}: expected a list")
        item_type = args[0] if args else Any
        return tuple(_check_type(f"{name}[{i}]", v, item_type) for i, v in enumerate(value))
    if origin is dict or annotation is dict:
        if not isinstance(value, Mapping):
            raise ConfigError(f"{name}={value!r}: expected a mapping")
        return dict(value)
    if annotation is bool:
        if not isinstance(value, bool):
            raise ConfigError(f"{name}={value!r}: expected true or false")
        return value
    if annotation is int:
        if isinstance(value, bool) or not isinstance(value, int):
            raise ConfigError(f"{name}={value!r}: expected an integer")
        return value
    if annotation is float:
        if isinstance(value, bool) or not isinstance(value, (int, float)):
            raise ConfigError(f"{name}={value!r}: expected a number")
        return float(value)
    if annotation is str:
        if not isinstance(value, str):
            raise ConfigError(f"{name}={value!r}: expected a string")
        return value
    if isinstance(annotation, type) and not isinstance(value, annotation):
        raise ConfigError(f"{name}={value!r}: expected {_type_name(annotation)}")
    return value


def keyed(settings: Any) -> dict[str, Any]:
    """The settings that affect numbers (for run signatures): every field not marked `logged`."""
    return {f.name: _plain(getattr(settings, f.name)) for f in dataclasses.fields(settings) if not f.metadata.get("logged")}


def logged(settings: Any) -> dict[str, Any]:
    """The settings recorded in provenance only (batch sizes, devices, workers)."""
    return {f.name: _plain(getattr(settings, f.name)) for f in dataclasses.fields(settings) if f.metadata.get("logged")}


def _plain(value: Any) -> Any:
    if isinstance(value, tuple):
        return [_plain(v) for v in value]
    if dataclasses.is_dataclass(value):
        return {f.name: _plain(getattr(value, f.name)) for f in dataclasses.fields(value)}
    return value
