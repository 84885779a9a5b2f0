"""Models: the registry, ResNet v2, Wide-ResNet, the bird-or-bicycle classifier,
heads (how logits are read; the challenge view of any model), adapters to the
hub/challenge conventions, safetensors weights, and bf16 fast copies."""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

from llrnet.models import kit_baselines as _kit_baselines  # noqa: F401  (registers resnet50_kit)
from llrnet.models import zoo as _zoo  # noqa: F401  (registers the models)
from llrnet.models.adapters import as_model_fn
from llrnet.models.classifier import BirdOrBicycleClassifier
from llrnet.models.heads import (
    BICYCLE,
    BIRD,
    SIGMOID_BIRD_HEAD,
    SOFTMAX_HEAD,
    challenge_view,
    head_of,
    set_head,
)
from llrnet.models.imagenet_adapter import ImageNetAsBirdOrBicycle, load_imagenet_model
from llrnet.models.precision import fast_copy
from llrnet.models.registry import list_models, model_arguments, register_model
from llrnet.models.resnet_v2 import ResNetV2
from llrnet.models.weights import load_weights, read_metadata, save_weights
from llrnet.models.wide_resnet import WideResNet

if TYPE_CHECKING:
    from llrnet.pretrained import create_model

__all__ = [
    "BICYCLE",
    "BIRD",
    "SIGMOID_BIRD_HEAD",
    "SOFTMAX_HEAD",
    "BirdOrBicycleClassifier",
    "ImageNetAsBirdOrBicycle",
    "ResNetV2",
    "WideResNet",
    "as_model_fn",
    "challenge_view",
    "create_model",
    "fast_copy",
    "head_of",
    "list_models",
    "load_imagenet_model",
    "load_weights",
    "model_arguments",
    "read_metadata",
    "register_model",
    "save_weights",
    "set_head",
]


def __getattr__(name: str) -> Any:
    """``create_model``, re-exported from :mod:`llrnet.pretrained` on first use (PEP 562).

    The one declared upward re-export: ``pretrained=True`` is decided above both
    models and hub, and importing ``llrnet.models`` must not import the hub.
    """
    if name == "create_model":
        # deferred: the declared lazy re-export; importing models must not import the hub
        from llrnet.pretrained import create_model

        globals()["create_model"] = create_model
        return create_model
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
