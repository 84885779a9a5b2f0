"""Plain data -> dataclasses, checked against the fields' annotations.
More: docs/core.md, "llrnet.core.coerce"."""

from __future__ import annotations

import contextlib
import dataclasses
import types
import typing
from collections.abc import Mapping
from typing import Any, Literal, TypeVar, Union

from llrnet.core.errors import UsageError

__all__ = ["coerce", "field_types", "from_mapping", "is_mapping_type"]

D = TypeVar("D")


def _type_name(annotation: Any) -> str:
    if isinstance(annotation, type):
        return annotation.__name__
    return str(annotation).replace("typing.", "")


def field_types(cls: type) -> dict[str, Any]:
    """The fields of the dataclass ``cls`` with their resolved annotations, in order."""
    hints = typing.get_type_hints(cls)
    return {f.name: hints[f.name] for f in dataclasses.fields(cls)}


def is_mapping_type(annotation: Any) -> bool:
    """True for ``dict[...]`` annotations: free-form mappings whose keys are not checked."""
    return typing.get_origin(annotation) is dict


def from_mapping(cls: type[D], values: Any, where: str = "") -> D:
    """An instance of the dataclass ``cls`` from ``values``, every key and type checked.

    ``where`` prefixes the keys in messages (``"optim"`` -> ``optim.lr: ...``).
    Fields missing from ``values`` keep their defaults.
    """
    if not isinstance(values, Mapping):
        raise UsageError(f"{where or 'config'}: expected a mapping, got {values!r}")
    fields = field_types(cls)
    unknown = sorted(set(values) - set(fields))
    if unknown:
        place = f" in {where}" if where else ""
        raise UsageError(
            f"unknown key{'s' if len(unknown) > 1 else ''} {', '.join(map(repr, unknown))}"
            f"{place}; valid keys: {', '.join(sorted(fields))}"
        )
    kwargs = {
        name: coerce(value, fields[name], f"{where}.{name}" if where else name)
        for name, value in values.items()
    }
    return cls(**kwargs)


def coerce(value: Any, annotation: Any, key: str) -> Any:
    """``value`` checked (and minimally converted) against ``annotation``; ``key`` names it."""
    origin = typing.get_origin(annotation)
    args = typing.get_args(annotation)
    if annotation is Any:
        return value
    if origin in (Union, types.UnionType):
        return _coerce_union(value, args, key)
    if origin is Literal:
        if value not in args:
            choices = ", ".join(repr(a) for a in args)
            raise UsageError(f"{key}: {value!r} is not one of {choices}")
        return value
    if dataclasses.is_dataclass(annotation) and isinstance(annotation, type):
        return from_mapping(annotation, value, key)
    if origin in (list, tuple):
        return _coerce_sequence(value, annotation, key)
    if origin is dict:
        if not isinstance(value, Mapping):
            raise UsageError(f"{key}: expected a mapping, got {value!r}")
        return {str(k): v for k, v in value.items()}
    return _coerce_scalar(value, annotation, key)


def _coerce_union(value: Any, args: tuple[Any, ...], key: str) -> Any:
    if value is None and type(None) in args:
        return None
    options = [a for a in args if a is not type(None)]
    for option in options[:-1]:
        with contextlib.suppress(UsageError):
            return coerce(value, option, key)
    # The last alternative's error names the expected type (e.g. "expected a number").
    return coerce(value, options[-1], key)


def _coerce_sequence(value: Any, annotation: Any, key: str) -> Any:
    origin, args = typing.get_origin(annotation), typing.get_args(annotation)
    if not isinstance(value, (list, tuple)):
        raise UsageError(f"{key}: expected a list ({_type_name(annotation)}), got {value!r}")
    if origin is list:
        item = args[0] if args else Any
        return [coerce(v, item, f"{key}[{i}]") for i, v in enumerate(value)]
    if len(args) == 2 and args[1] is Ellipsis:
        return tuple(coerce(v, args[0], f"{key}[{i}]") for i, v in enumerate(value))
    if args and len(args) != len(value):
        raise UsageError(f"{key}: expected {len(args)} values, got {list(value)!r}")
    return tuple(coerce(v, a, f"{key}[{i}]") for i, (a, v) in enumerate(zip(args, value)))


def _coerce_scalar(value: Any, annotation: Any, key: str) -> Any:
    if annotation is bool:
        if not isinstance(value, bool):
            raise UsageError(f"{key}: expected true or false, got {value!r}")
        return value
    if annotation is int:
        if isinstance(value, bool) or not isinstance(value, int):
            raise UsageError(f"{key}: expected an integer, got {value!r}")
        return value
    if annotation is float:
        if isinstance(value, bool) or not isinstance(value, (int, float)):
            raise UsageError(f"{key}: expected a number, got {value!r}")
        return float(value)
    if annotation is str:
        if not isinstance(value, str):
            raise UsageError(f"{key}: expected a string, got {value!r}")
        return value
    raise UsageError(f"{key}: unsupported type {_type_name(annotation)}")  # pragma: no cover
