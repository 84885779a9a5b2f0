"""A registry of model builders: ``create_model(name, **kwargs)``.

Builders are keyword-only functions returning an ``nn.Module``. Unknown names
and unknown keyword arguments raise :class:`~llrnet.errors.UsageError` listing
what is valid, so a typo never silently builds the wrong network.
"""

from __future__ import annotations

import inspect
from collections.abc import Callable
from typing import Any, TypeVar

from torch import nn

from llrnet.errors import UsageError

Builder = Callable[..., nn.Module]
B = TypeVar("B", bound=Builder)

_REGISTRY: dict[str, Builder] = {}


def register_model(name: str) -> Callable[[B], B]:
    """Decorator registering ``builder`` under ``name``; duplicates are an error.

    The builder must take keyword-only arguments (``def f(*, ...)``).
    """

    def decorate(builder: B) -> B:
        if name in _REGISTRY:
            raise UsageError(f"model {name!r} is registered twice")
        params = inspect.signature(builder).parameters.values()
        if any(p.kind is not inspect.Parameter.KEYWORD_ONLY for p in params):
            raise UsageError(f"builder of {name!r} must take keyword-only arguments")
        _REGISTRY[name] = builder
        return builder

    return decorate


def list_models() -> list[str]:
    """Names of every registered model, sorted."""
    return sorted(_REGISTRY)


def model_arguments(name: str) -> dict[str, Any]:
    """The keyword arguments of model ``name`` with their defaults."""
    builder = _get_builder(name)
    return {
        p.name: (None if p.default is inspect.Parameter.empty else p.default)
        for p in inspect.signature(builder).parameters.values()
    }


def _get_builder(name: str) -> Builder:
    try:
        return _REGISTRY[name]
    except KeyError:
        raise UsageError(
            f"unknown model {name!r}; valid names: {', '.join(list_models())}"
        ) from None


def create_model(name: str, **kwargs: Any) -> nn.Module:
    """Build the registered model ``name`` with keyword arguments ``kwargs``.

    Raises:
        UsageError: the name is unknown or an argument is not one the builder takes.
    """
    builder = _get_builder(name)
    valid = set(inspect.signature(builder).parameters)
    unknown = sorted(set(kwargs) - valid)
    if unknown:
        raise UsageError(
            f"model {name!r} takes no argument(s) {', '.join(unknown)}; "
            f"valid: {', '.join(sorted(valid)) or '(none)'}"
        )
    model = builder(**kwargs)
    # Recorded so that save_weights can rebuild the model exactly.
    model.llrnet_architecture = name  # type: ignore[assignment]
    model.llrnet_kwargs = dict(kwargs)  # type: ignore[assignment]
    return model
