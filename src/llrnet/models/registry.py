"""The registry of model builders: ``build_model(name, **kwargs)``; users call
``llrnet.models.create_model``, which adds ``pretrained=True`` above this layer.
More: docs/models.md, "llrnet.models.registry"."""

from __future__ import annotations

import typing
from collections.abc import Callable, Mapping
from typing import Any

from torch import nn

from llrnet.core.coerce import coerce
from llrnet.core.errors import UsageError
from llrnet.core.registry import Registry

Builder = Callable[..., nn.Module]

MODELS: Registry[Builder] = Registry("model", keyword_only=True)
"""Every registered model builder, by name."""

register_model = MODELS.register
"""Decorator: ``@register_model`` (name from the function) or ``@register_model("name")``."""

list_models = MODELS.names
"""Names of every registered model, sorted."""

model_arguments = MODELS.arguments
"""The keyword arguments of model ``name`` with their defaults (None if required)."""


def check_model_arguments(name: str, kwargs: Any) -> dict[str, Any]:
    """``kwargs`` checked against the signature of model ``name``, before anything is built.

    Every key must be a parameter of the builder and every value must match its
    annotation (a list is accepted for a tuple, an integer for a float, as JSON
    stores them). Integer sizes (every ``int`` parameter with a positive
    default, and the entries of ``tuple[int, ...]`` ones) must be >= 1.
    Returns the converted arguments.

    Raises:
        UsageError: the name is unknown, ``kwargs`` is not a mapping, or a key
            or value is invalid; the message names the key.
    """
    builder = MODELS.get(name)
    if not isinstance(kwargs, Mapping) or not all(isinstance(k, str) for k in kwargs):
        raise UsageError(f"model {name!r}: arguments must be a mapping of names to values, "
                         f"got {type(kwargs).__name__} {kwargs!r}"[:200])
    MODELS.check_arguments(name, dict(kwargs))
    hints = typing.get_type_hints(builder)
    defaults = MODELS.arguments(name)
    checked: dict[str, Any] = {}
    for key, value in kwargs.items():
        where = f"model {name!r} argument {key}"
        hint = hints.get(key, Any)
        if typing.get_origin(hint) is typing.Literal:
            checked[key] = value  # the builder checks its choices, in its own words
            continue
        checked[key] = coerce(value, hint, where)
        default = defaults.get(key)
        sizes = [checked[key]] if _is_size(default) else []
        if isinstance(default, tuple) and default and all(_is_size(d) for d in default):
            sizes = list(checked[key])
        if any(size < 1 for size in sizes):
            raise UsageError(f"{where}: sizes must be >= 1, got {value!r}")
    return checked


def _is_size(value: Any) -> bool:
    return isinstance(value, int) and not isinstance(value, bool) and value > 0


def build_model(name: str, **kwargs: Any) -> nn.Module:
    """Build the registered model ``name`` with keyword arguments ``kwargs`` (untrained).

    The model records ``llrnet_architecture`` and ``llrnet_kwargs`` (the checked
    arguments), so that :func:`~llrnet.models.save_weights` can rebuild it.

    Raises:
        UsageError: the name is unknown, or an argument is not one the builder
            takes or has the wrong type (:func:`check_model_arguments`).
    """
    kwargs = check_model_arguments(name, kwargs)
    model = MODELS.get(name)(**kwargs)
    # Recorded so that save_weights can rebuild the model exactly.
    model.llrnet_architecture = name  # type: ignore[assignment]
    model.llrnet_kwargs = dict(kwargs)  # type: ignore[assignment]
    return model
