"""Models: the registry, ResNet v2, Wide-ResNet, the bird-or-bicycle classifier,
heads (how logits are read; the challenge view of any model), adapters to the
hub/challenge conventions, safetensors weights, and bf16 fast copies."""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

from llrnet.models import kit_baselines as _kit_baselines  # noqa: F401  (registers resnet50_kit)
from llrnet.models import zoo as _zoo  # noqa: F401  (registers the models)
from llrnet.models.adapters import as_model_fn, latents_module, linear_module
from llrnet.models.classifier import BirdOrBicycleClassifier, ImageNetClassifier
from llrnet.models.heads import (
    BICYCLE,
    BIRD,
    SIGMOID_BIRD_HEAD,
    SOFTMAX_HEAD,
    BirdLogitView,
    ChallengeView,
    Head,
    SigmoidBirdHead,
    SoftmaxHead,
    challenge_view,
    head_of,
    set_head,
    two_class_from_bird_logit,
)
from llrnet.models.imagenet_adapter import (
    BICYCLE_IMAGENET_CLASSES,
    BIRD_IMAGENET_CLASSES,
    ImageNetAsBirdOrBicycle,
    bird_or_bicycle_from_imagenet,
    load_imagenet_model,
)
from llrnet.models.layers import Conv2dSame, MaxPool2dSame, Normalize, same_padding
from llrnet.models.precision import (
    PRECISIONS,
    FastCopy,
    cpu_bf16_units,
    fast_copy,
    has_bf16_hardware,
    resolve_precision,
    strict_fp32,
)
from llrnet.models.preprocessing import CropResizeScale, tf1_central_crop, tf1_resize_bilinear
from llrnet.models.registry import list_models, model_arguments, register_model
from llrnet.models.resnet_v2 import ResNetV2
from llrnet.models.weights import load_state_strict, load_weights, read_metadata, save_weights
from llrnet.models.wide_resnet import WideResNet

if TYPE_CHECKING:
    from llrnet.pretrained import create_model

__all__ = [
    "BICYCLE",
    "BICYCLE_IMAGENET_CLASSES",
    "BIRD",
    "BIRD_IMAGENET_CLASSES",
    "PRECISIONS",
    "SIGMOID_BIRD_HEAD",
    "SOFTMAX_HEAD",
    "BirdLogitView",
    "BirdOrBicycleClassifier",
    "ChallengeView",
    "Conv2dSame",
    "CropResizeScale",
    "FastCopy",
    "Head",
    "ImageNetAsBirdOrBicycle",
    "ImageNetClassifier",
    "MaxPool2dSame",
    "Normalize",
    "ResNetV2",
    "SigmoidBirdHead",
    "SoftmaxHead",
    "WideResNet",
    "as_model_fn",
    "bird_or_bicycle_from_imagenet",
    "challenge_view",
    "cpu_bf16_units",
    "create_model",
    "fast_copy",
    "has_bf16_hardware",
    "head_of",
    "latents_module",
    "linear_module",
    "list_models",
    "load_imagenet_model",
    "load_state_strict",
    "load_weights",
    "model_arguments",
    "read_metadata",
    "register_model",
    "resolve_precision",
    "same_padding",
    "save_weights",
    "set_head",
    "strict_fp32",
    "tf1_central_crop",
    "tf1_resize_bilinear",
    "two_class_from_bird_logit",
]


def __getattr__(name: str) -> Any:
    """``create_model``, re-exported from :mod:`llrnet.pretrained` on first use (PEP 562).

    The one declared upward re-export: ``pretrained=True`` is decided above both
    models and hub, and importing ``llrnet.models`` must not import the hub.
    """
    if name == "create_model":
        from llrnet.pretrained import create_model

        globals()["create_model"] = create_model
        return create_model
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
