"""``create_model(name, pretrained=False, **kwargs)``: a registered model, untrained or with
DeepMind's released weights.

This module sits above both :mod:`llrnet.models` (which builds) and :mod:`llrnet.hub`
(which fetches and converts), so neither knows the other; ``llrnet.models`` re-exports
:func:`create_model` lazily, and the hub is imported only when ``pretrained=True``.
"""

from __future__ import annotations

from typing import Any

from torch import nn

from llrnet.core.errors import UsageError, WeightsError
from llrnet.models.registry import build_model, check_model_arguments
from llrnet.models.weights import load_weights
from llrnet.models.zoo import released

__all__ = ["create_model"]


def create_model(name: str, *, pretrained: bool | str = False, **kwargs: Any) -> nn.Module:
    """Build the registered model ``name`` with keyword arguments ``kwargs``.

    Images in [0, 1], NCHW, in; logits [N, C] out (``docs/models.md``).
    ``pretrained=True``: DeepMind's released weights for ``name``
    (``llr_pretrain_adv``, ``resnet152_v2_imagenet``, ``wrn_40_8_softplus``;
    :data:`llrnet.models.zoo.RELEASED`), fetched and converted once, then loaded
    from llrnet's cache (``docs/hub.md``). ``pretrained="hf-hub:owner/repo[@revision]"``:
    the weights of that Hugging Face Hub repository, which must hold ``name``
    (``docs/models.md``, "Hugging Face Hub").

    Raises:
        UsageError: the name is unknown, or an argument is not one the builder
            takes or has the wrong type, or ``name`` has no released weights, or
            arguments were given with ``pretrained=True`` (the weights fix them).
        WeightsError: the Hub repository holds another architecture, or its file
            cannot be fetched or loaded.
    """
    if isinstance(pretrained, str):
        return _from_hub(name, pretrained, kwargs)
    if not pretrained:
        return build_model(name, **kwargs)
    if kwargs:
        raise UsageError(f"{name}: pretrained weights fix the architecture; no arguments "
                         f"({', '.join(sorted(kwargs))}) can be given with pretrained=True")
    released(name)  # an unknown release fails here, before the hub is imported
    # deferred: the hub (archive readers, recognition, conversion, HTTP) is heavy, and only
    # pretrained=True needs it
    from llrnet.hub.pretrained import load_pretrained

    return load_pretrained(name)


def _from_hub(name: str, source: str, kwargs: dict[str, Any]) -> nn.Module:
    """``create_model(name, pretrained="hf-hub:...")``: the repository's model if it is
    ``name``."""
    if not source.startswith("hf-hub:"):
        raise UsageError(f"pretrained must be True, False or 'hf-hub:owner/repo', got {source!r}")
    check_model_arguments(name, {})  # an unknown name fails here, before any download
    if kwargs:
        raise UsageError(f"{name}: pretrained weights fix the architecture; no arguments "
                         f"({', '.join(sorted(kwargs))}) can be given with pretrained={source!r}")
    model = load_weights(source)
    held = getattr(model, "llrnet_architecture", None)
    if held != name:
        raise WeightsError(f"{source} holds {held!r}, not {name!r}; call "
                           f"create_model({held!r}, pretrained={source!r}) or load_weights")
    return model
