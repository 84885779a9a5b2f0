"""The registered models. ``list_models()`` names them; ``create_model`` builds them.
:data:`RELEASED` declares, beside the builders, the models DeepMind published
weights for (``create_model(name, pretrained=True)``; ``llrnet.hub`` reads it).
More: docs/models.md, "llrnet.models.zoo"."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Literal

from llrnet.core.errors import UsageError
from llrnet.models.classifier import BirdOrBicycleClassifier, ImageNetClassifier
from llrnet.models.heads import SigmoidBirdHead, set_head
from llrnet.models.layers import Padding
from llrnet.models.registry import register_model
from llrnet.models.resnet_v2 import STAGE_UNITS, STANDARD_WIDTHS, ResNetV2, StrideIn
from llrnet.models.wide_resnet import (
    CIFAR10_MEAN,
    CIFAR10_STD,
    Activation,
    Variant,
    WideResNet,
)

TINY_UNITS = (1, 1, 1, 1)
TINY_WIDTHS = (4, 8, 16, 32)


@dataclass(frozen=True)
class Released:
    """DeepMind's published weights of a registered model: where they are and what they are.

    ``handle`` is the TF-Hub module (``owner/model/[variation/]version``; for a
    release in two modules, the latents) and ``linear`` the head module, if any.
    ``architecture`` is the registered model the weights convert into (None:
    the release's own name). Plain data: ``llrnet.hub`` fetches and converts.
    """

    handle: str
    description: str
    linear: str | None = None
    architecture: str | None = None


RELEASED: dict[str, Released] = {
    "llr_pretrain_adv": Released(
        "deepmind/llr-pretrain-adv/latents/1",
        "bird-or-bicycle: ResNet-152 v2, LLR pre-trained on ImageNet, adversarially trained",
        linear="deepmind/llr-pretrain-adv/linear/1"),
    "resnet152_v2_imagenet": Released(
        "deepmind/local-linearity/imagenet/1",
        "ImageNet: ResNet-152 v2 trained with LLR, robust to L-inf 4/255"),
    "wrn_40_8_softplus": Released(
        "deepmind/local-linearity/cifar10/1",
        "CIFAR-10: Wide-ResNet-40-8 softplus (DeepMind's variant) trained with LLR, robust to "
        "L-inf 8/255"),
}
"""Every released model, by registered name (``llr_pretrain_adv``, ``resnet152_v2_imagenet``
and ``wrn_40_8_softplus`` are built below)."""


def released(name: str) -> Released:
    """The release of model ``name``.

    Raises:
        UsageError: ``name`` has no released weights (the released names are listed).
    """
    if name not in RELEASED:
        raise UsageError(f"no released weights for {name!r}; released: "
                         f"{', '.join(sorted(RELEASED))}")
    return RELEASED[name]


def _bird_or_bicycle(trunk: ResNetV2, preprocess: bool, crop_fraction: float
                     ) -> BirdOrBicycleClassifier:
    return BirdOrBicycleClassifier(trunk, trunk.num_features, preprocess=preprocess,
                                   crop_fraction=crop_fraction)


def _trunk(units: tuple[int, ...], widths: tuple[int, ...], stem_width: int, padding: Padding,
           bn_eps: float, stride_in: StrideIn, stem_bias: bool, out_bias: bool,
           bn_scale: bool) -> ResNetV2:
    return ResNetV2(units=tuple(units), widths=tuple(widths), stem_width=stem_width,
                    padding=padding, bn_eps=bn_eps, stride_in=stride_in, stem_bias=stem_bias,
                    out_bias=out_bias, bn_scale=bn_scale)


@register_model
def llr_pretrain_adv(
    *,
    depth: int = 152,
    padding: Padding = "same",
    bn_eps: float = 1e-5,
    stride_in: StrideIn = "first",
    stem_bias: bool = False,
    out_bias: bool = False,
    bn_scale: bool = True,
    preprocess: bool = True,
    crop_fraction: float = 0.875,
) -> BirdOrBicycleClassifier:
    """DeepMind's ``llr-pretrain-adv``: ResNet-``depth`` v2 latents + linear head."""
    trunk = ResNetV2(units=STAGE_UNITS[depth], padding=padding, bn_eps=bn_eps,
                     stride_in=stride_in, stem_bias=stem_bias, out_bias=out_bias,
                     bn_scale=bn_scale)
    return _bird_or_bicycle(trunk, preprocess, crop_fraction)


def _imagenet(units: tuple[int, ...], widths: tuple[int, ...], stem_width: int,
              num_classes: int, padding: Padding, bn_eps: float, stride_in: StrideIn,
              stem_bias: bool, out_bias: bool, bn_scale: bool = True) -> ImageNetClassifier:
    trunk = _trunk(units, widths, stem_width, padding, bn_eps, stride_in, stem_bias, out_bias,
                   bn_scale)
    return ImageNetClassifier(trunk, trunk.num_features, num_classes)


def _register_imagenet(depth: int) -> None:
    @register_model(f"resnet{depth}_v2_imagenet")
    def build(
        *,
        num_classes: int = 1000,
        padding: Padding = "same",
        bn_eps: float = 1e-5,
        stride_in: StrideIn = "first",
        stem_bias: bool = False,
        out_bias: bool = False,
        bn_scale: bool = True,
    ) -> ImageNetClassifier:
        return _imagenet(STAGE_UNITS[depth], STANDARD_WIDTHS, 64, num_classes, padding,
                         bn_eps, stride_in, stem_bias, out_bias, bn_scale)

    build.__doc__ = f"ResNet-{depth} v2 ImageNet classifier on ``2x - 1`` inputs."


for _depth in sorted(STAGE_UNITS):
    _register_imagenet(_depth)


def _register_wrn(name: str, depth: int, width: int, activation: Activation,
                  default_variant: Variant = "zagoruyko") -> None:
    @register_model(name)
    def build(
        *,
        num_classes: int = 10,
        in_channels: int = 3,
        mean: tuple[float, ...] = CIFAR10_MEAN,
        std: tuple[float, ...] = CIFAR10_STD,
        padding: Padding = "same",
        bn_eps: float = 1e-5,
        variant: Variant = default_variant,
    ) -> WideResNet:
        return wide_resnet(depth=depth, width=width, num_classes=num_classes,
                           in_channels=in_channels, activation=activation, mean=mean, std=std,
                           padding=padding, bn_eps=bn_eps, variant=variant)

    build.__doc__ = (f"Pre-activation WRN-{depth}-{width} with {activation} (CIFAR-10), "
                     f"{default_variant} variant by default.")


_register_wrn("wrn_28_8_softplus", 28, 8, "softplus", "deepmind")
_register_wrn("wrn_28_8_softplus_zagoruyko", 28, 8, "softplus")
_register_wrn("wrn_40_8_softplus", 40, 8, "softplus", "deepmind")
_register_wrn("wrn_28_10_relu", 28, 10, "relu")
_register_wrn("wrn_16_2_softplus", 16, 2, "softplus")
_register_wrn("wrn_10_1_softplus", 10, 1, "softplus")


DigitsHead = Literal["softmax", "sigmoid_bird"]


@register_model
def wide_resnet(
    *,
    depth: int = 10,
    width: int = 1,
    num_classes: int = 10,
    in_channels: int = 3,
    activation: Activation = "softplus",
    variant: Variant = "deepmind",
    mean: tuple[float, ...] = CIFAR10_MEAN,
    std: tuple[float, ...] = CIFAR10_STD,
    padding: Padding = "same",
    bn_eps: float = 1e-5,
) -> WideResNet:
    """The Wide-ResNet family, every option an argument (see :class:`WideResNet`)."""
    return WideResNet(depth=depth, width=width, num_classes=num_classes,
                      in_channels=in_channels, activation=activation, mean=tuple(mean),
                      std=tuple(std), padding=padding, bn_eps=bn_eps, variant=variant)


@register_model
def resnet_v2_classifier(
    *,
    units: tuple[int, ...] = TINY_UNITS,
    widths: tuple[int, ...] = TINY_WIDTHS,
    stem_width: int = 8,
    num_classes: int = 10,
    padding: Padding = "same",
    bn_eps: float = 1e-5,
    stride_in: StrideIn = "first",
    stem_bias: bool = False,
    out_bias: bool = False,
    bn_scale: bool = True,
) -> ImageNetClassifier:
    """The ResNet v2 classifier family on ``2x - 1`` inputs, every option an argument.

    Its defaults are the tiny configuration, also registered as
    ``resnet_v2_tiny_imagenet`` (tests, fixtures)."""
    return _imagenet(units, widths, stem_width, num_classes, padding, bn_eps, stride_in,
                     stem_bias, out_bias, bn_scale)


@register_model
def resnet_v2_bird_or_bicycle(
    *,
    units: tuple[int, ...] = TINY_UNITS,
    widths: tuple[int, ...] = TINY_WIDTHS,
    stem_width: int = 8,
    padding: Padding = "same",
    bn_eps: float = 1e-5,
    stride_in: StrideIn = "first",
    stem_bias: bool = False,
    out_bias: bool = False,
    bn_scale: bool = True,
    preprocess: bool = True,
    crop_fraction: float = 0.875,
) -> BirdOrBicycleClassifier:
    """The bird-or-bicycle family (ResNet v2 latents + linear head), every option an
    argument.

    Its defaults are a tiny classifier with the released model's structure, also
    registered as ``llr_pretrain_adv_tiny`` (tests, fixtures)."""
    return _bird_or_bicycle(_trunk(units, widths, stem_width, padding, bn_eps, stride_in,
                                   stem_bias, out_bias, bn_scale), preprocess, crop_fraction)


# The tiny configurations are the families' defaults: one builder, two names.
register_model("resnet_v2_tiny_imagenet")(resnet_v2_classifier)
register_model("llr_pretrain_adv_tiny")(resnet_v2_bird_or_bicycle)


@register_model
def digits_wrn(
    *,
    depth: int = 10,
    width: int = 2,
    num_classes: int = 2,
    activation: Activation = "softplus",
    head: DigitsHead = "softmax",
) -> WideResNet:
    """A small WRN for the bundled grayscale digits (28x28, 1 channel, [0, 1]).

    ``head="sigmoid_bird"`` gives it the bird-or-bicycle classifier's head
    (:class:`~llrnet.models.heads.SigmoidBirdHead`): its last output column
    (column 1 of ``num_classes=2``, like the released 2-channel head; column 0
    of ``num_classes=1``) is one bird logit read through a sigmoid, and the
    challenge sees ``[relu(-l), relu(l)]``.
    """
    model = WideResNet(depth=depth, width=width, num_classes=num_classes, in_channels=1,
                       activation=activation, mean=(0.5,), std=(0.5,), padding="same")
    if head == "sigmoid_bird":
        if num_classes not in (1, 2):
            raise UsageError(f"a sigmoid bird head needs num_classes 1 or 2, got {num_classes}")
        set_head(model, SigmoidBirdHead(column=num_classes - 1))
    elif head != "softmax":
        raise UsageError(f"head must be 'softmax' or 'sigmoid_bird', got {head!r}")
    return model
