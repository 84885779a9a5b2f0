"""The registry of model builders: ``create_model(name, **kwargs)``.

:data:`MODELS` is an :class:`llrnet.registry.Registry` of keyword-only
functions returning an ``nn.Module``. Unknown names, duplicate names and
unknown keyword arguments raise :class:`~llrnet.errors.UsageError` listing
what is valid, so a typo never silently builds the wrong network.

``register_model``, ``list_models`` and ``model_arguments`` are the registry's
``register``, ``names`` and ``arguments``; :func:`create_model` builds and
records how, so that :func:`~llrnet.models.save_weights` can rebuild it.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

from torch import nn

from llrnet.registry import Registry

Builder = Callable[..., nn.Module]

MODELS: Registry[Builder] = Registry("model", keyword_only=True)
"""Every registered model builder, by name."""

register_model = MODELS.register
"""Decorator: ``@register_model`` (name from the function) or ``@register_model("name")``."""

list_models = MODELS.names
"""Names of every registered model, sorted."""

model_arguments = MODELS.arguments
"""The keyword arguments of model ``name`` with their defaults (None if required)."""


def create_model(name: str, **kwargs: Any) -> nn.Module:
    """Build the registered model ``name`` with keyword arguments ``kwargs``.

    Raises:
        UsageError: the name is unknown or an argument is not one the builder takes.
    """
    model: nn.Module = MODELS.build(name, **kwargs)
    # Recorded so that save_weights can rebuild the model exactly.
    model.llrnet_architecture = name  # type: ignore[assignment]
    model.llrnet_kwargs = dict(kwargs)  # type: ignore[assignment]
    return model
