"""Pre-activation Wide-ResNet (Zagoruyko & Komodakis 2016) in two variants.
More: docs/models.md, "llrnet.models.wide_resnet"."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any, Literal, cast

import torch
import torch.nn.functional as F
from torch import nn

from llrnet.core.errors import InputError, UsageError
from llrnet.models import layout
from llrnet.models.layers import Normalize, Padding, conv2d, softplus

Activation = Literal["softplus", "relu"]
Variant = Literal["zagoruyko", "deepmind"]
VARIANTS: tuple[str, ...] = ("zagoruyko", "deepmind")

CIFAR10_MEAN = (125.3 / 255, 123.0 / 255, 113.9 / 255)
CIFAR10_STD = (63.0 / 255, 62.1 / 255, 66.7 / 255)

_ACTIVATIONS: dict[str, Callable[[torch.Tensor], torch.Tensor]] = {
    "softplus": softplus,
    "relu": F.relu,
}


class BasicBlockV2(nn.Module):
    """Pre-activation basic block. [N, C_in, H, W] -> [N, C_out, H/s, W/s]."""

    #: (convolution, batch norm) pairs where the norm alone reads the convolution's
    #: output, so an eval-mode copy may fold one into the other
    #: (:func:`llrnet.models.precision.decision_form`).
    batch_norm_folds = (("conv1", "bn2"),)

    def __init__(
        self,
        in_channels: int,
        out_channels: int,
        stride: int,
        *,
        activation: Activation,
        padding: Padding,
        bn_eps: float,
        bn_momentum: float,
        projection: bool | None = None,
    ) -> None:
        """``projection``: force (True) or forbid (False) a projection shortcut; by
        default one is used where the channel count or the resolution changes."""
        super().__init__()
        if projection is None:
            projection = in_channels != out_channels or stride != 1
        elif not projection and (in_channels != out_channels or stride != 1):
            raise UsageError("a block that changes channels or resolution needs a projection")
        self.act = _ACTIVATIONS[activation]
        self.bn1 = nn.BatchNorm2d(in_channels, eps=bn_eps, momentum=bn_momentum)
        self.conv1 = conv2d(in_channels, out_channels, 3, stride=stride, padding=padding)
        self.bn2 = nn.BatchNorm2d(out_channels, eps=bn_eps, momentum=bn_momentum)
        self.conv2 = conv2d(out_channels, out_channels, 3, padding=padding)
        self.shortcut: nn.Module | None = None
        if projection:
            self.shortcut = conv2d(in_channels, out_channels, 1, stride=stride, padding=padding)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        preact = self.act(self.bn1(x))
        shortcut = x if self.shortcut is None else self.shortcut(preact)
        out = self.conv1(preact)
        out = self.conv2(self.act(self.bn2(out)))
        return out + shortcut


class WideResNet(nn.Module):
    """Pre-activation WRN: [N, C, H, W] images in [0, 1] -> logits [N, num_classes].

    Args:
        depth: total depth d with (d - 4) divisible by 6 (10, 16, 28, 40, ...).
        width: widening factor k.
        num_classes: output logits.
        in_channels: image channels.
        activation: ``"softplus"`` or ``"relu"``.
        mean, std: per-channel input normalization, applied inside the model.
        padding: ``"same"`` (TF) or ``"symmetric"`` (PyTorch).
        bn_eps, bn_momentum: batch-norm epsilon and moving-average rate.
        variant: ``"zagoruyko"`` (16-channel stem, projections where needed) or
            ``"deepmind"`` (``16 * width`` stem, a projection in every group's
            first block); see the module docstring.
    """

    def __init__(
        self,
        *,
        depth: int = 28,
        width: int = 8,
        num_classes: int = 10,
        in_channels: int = 3,
        activation: Activation = "softplus",
        mean: tuple[float, ...] = CIFAR10_MEAN,
        std: tuple[float, ...] = CIFAR10_STD,
        padding: Padding = "same",
        bn_eps: float = 1e-5,
        bn_momentum: float = 0.1,
        variant: Variant = "zagoruyko",
    ) -> None:
        super().__init__()
        if variant not in VARIANTS:
            raise UsageError(f"variant must be one of {list(VARIANTS)}, got {variant!r}")
        if (depth - 4) % 6 != 0 or depth < 10:
            raise UsageError(f"WRN depth must be 6n + 4 with n >= 1, got {depth}")
        if activation not in _ACTIVATIONS:
            raise UsageError(
                f"activation must be one of {sorted(_ACTIVATIONS)}, got {activation!r}"
            )
        if len(mean) != in_channels:
            raise UsageError(f"mean/std need {in_channels} values, got {len(mean)}")
        blocks_per_group = (depth - 4) // 6
        self.normalize = Normalize(mean, std)
        self.variant = variant
        channels = 16 * width if variant == "deepmind" else 16
        self.stem_conv = conv2d(in_channels, channels, 3, padding=padding)
        groups = []
        for group, stride in enumerate((1, 2, 2)):
            out_channels = 16 * width * 2**group
            blocks = []
            for index in range(blocks_per_group):
                blocks.append(
                    BasicBlockV2(channels, out_channels, stride if index == 0 else 1,
                                 activation=activation, padding=padding, bn_eps=bn_eps,
                                 bn_momentum=bn_momentum,
                                 projection=True if variant == "deepmind" and index == 0
                                 else None)
                )
                channels = out_channels
            groups.append(nn.Sequential(*blocks))
        self.groups = nn.Sequential(*groups)
        self.final_bn = nn.BatchNorm2d(channels, eps=bn_eps, momentum=bn_momentum)
        self.act = _ACTIVATIONS[activation]
        self.fc = nn.Linear(channels, num_classes)
        self.num_features = channels

    def forward_features(self, x: torch.Tensor) -> torch.Tensor:
        """[N, C, H, W] in [0, 1] -> pooled features [N, num_features]."""
        x = self.stem_conv(self.normalize(x))
        x = self.groups(x)
        x = self.act(self.final_bn(x))
        return x.mean(dim=(2, 3))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """[N, C, H, W] in [0, 1] -> logits [N, num_classes]."""
        return self.fc(self.forward_features(x))

    def import_structure(self) -> dict[str, Any]:
        """Activation, depth, widening factor and variant."""
        first = self._blocks()[0]
        return {"activation": self.act.__name__, "depth": 6 * len(first) + 4,
                "width": first[0].conv1.out_channels // 16, "variant": self.variant}

    def import_layout(self, network: layout.Network, prefix: str = "") -> layout.Layout:
        """Stem, the units group by group, final batch norm and ``fc``; the input
        normalization keeps its constructor values (the source expects normalized input).

        Raises:
            InputError: ``network`` has a different number of units, or no head.
        """
        positions = [f"{prefix}groups.{g}.{i}" for g, blocks in enumerate(self._blocks())
                     for i in range(len(blocks))]
        if len(positions) != len(network.units):
            raise InputError(f"the network has {len(network.units)} units, this WRN "
                             f"{len(positions)}")
        if network.head is None:
            raise InputError("a Wide-ResNet is filled with its classification head")
        targets = [layout.conv(network.stem, f"{prefix}stem_conv")]
        for module, unit in zip(positions, network.units):
            targets += layout.residual_unit(unit, module)
        targets += [layout.batch_norm(network.final_bn, f"{prefix}final_bn"),
                    layout.linear(network.head, f"{prefix}fc")]
        rule = "the architecture's input normalization (the module expects normalized inputs)"
        return layout.Layout(tuple(targets), {f"{prefix}normalize.mean": rule,
                                              f"{prefix}normalize.std": rule})

    def _blocks(self) -> list[list[BasicBlockV2]]:
        return [[cast(BasicBlockV2, block) for block in cast(nn.Sequential, group)]
                for group in self.groups]
