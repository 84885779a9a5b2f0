"""Pre-activation ResNet (v2, He et al. 2016) with bottleneck blocks.
More: docs/models.md, "llrnet.models.resnet_v2"."""

from __future__ import annotations

from typing import Any, Literal, cast

import torch
import torch.nn.functional as F
from torch import nn

from llrnet.core.errors import InputError, UsageError
from llrnet.models import layout
from llrnet.models.layers import Padding, conv2d, max_pool

StrideIn = Literal["first", "last"]

STAGE_UNITS: dict[int, tuple[int, int, int, int]] = {
    50: (3, 4, 6, 3),
    101: (3, 4, 23, 3),
    152: (3, 8, 36, 3),
}
"""Bottleneck units per stage for each standard depth."""

STANDARD_WIDTHS = (64, 128, 256, 512)
"""Bottleneck widths per stage; each stage outputs 4x its width."""


class OffsetBatchNorm2d(nn.BatchNorm2d):
    """Batch norm with a learned offset (``bias``) but no scale: ``x_hat + bias``.

    Running statistics, momentum and epsilon behave exactly as in
    ``nn.BatchNorm2d``; the state has ``bias``, ``running_mean``,
    ``running_var`` and ``num_batches_tracked`` (no ``weight``).
    """

    def __init__(self, num_features: int, eps: float = 1e-5, momentum: float = 0.1) -> None:
        super().__init__(num_features, eps=eps, momentum=momentum, affine=False)
        # ``_BatchNorm.forward`` passes ``self.weight`` (None) and ``self.bias`` to
        # ``F.batch_norm``, which then adds the offset without scaling.
        self.bias = nn.Parameter(torch.zeros(num_features))


def batch_norm(channels: int, *, eps: float, momentum: float, scale: bool = True) -> nn.Module:
    """``nn.BatchNorm2d`` (``scale=True``) or :class:`OffsetBatchNorm2d` (``scale=False``)."""
    if scale:
        return nn.BatchNorm2d(channels, eps=eps, momentum=momentum)
    return OffsetBatchNorm2d(channels, eps=eps, momentum=momentum)


class BottleneckV2(nn.Module):
    """One pre-activation bottleneck unit. [N, C_in, H, W] -> [N, 4w, H/s, W/s]."""

    #: (convolution, batch norm) pairs where the norm alone reads the convolution's
    #: output (:func:`llrnet.models.precision.decision_form` folds them).
    batch_norm_folds = (("conv1", "bn2"), ("conv2", "bn3"))

    def __init__(
        self,
        in_channels: int,
        width: int,
        stride: int,
        *,
        padding: Padding,
        bn_eps: float,
        bn_momentum: float,
        out_bias: bool,
        bn_scale: bool = True,
    ) -> None:
        super().__init__()
        out_channels = 4 * width
        self.stride = stride
        def bn(channels: int) -> nn.Module:
            return batch_norm(channels, eps=bn_eps, momentum=bn_momentum, scale=bn_scale)

        self.bn1 = bn(in_channels)
        self.conv1 = conv2d(in_channels, width, 1, padding=padding)
        self.bn2 = bn(width)
        self.conv2 = conv2d(width, width, 3, stride=stride, padding=padding)
        self.bn3 = bn(width)
        self.conv3 = conv2d(width, out_channels, 1, padding=padding, bias=out_bias)
        self.shortcut: nn.Module | None = None
        if in_channels != out_channels:
            self.shortcut = conv2d(
                in_channels, out_channels, 1, stride=stride, padding=padding, bias=out_bias
            )

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        # Batch-norm outputs are fresh tensors that their backward does not need,
        # so ReLU may overwrite them (as torchvision does): less memory traffic.
        preact = F.relu(self.bn1(x), inplace=True)
        if self.shortcut is not None:
            shortcut = self.shortcut(preact)
        elif self.stride > 1:
            shortcut = x[:, :, :: self.stride, :: self.stride]  # TF-slim's subsample
        else:
            shortcut = x
        out = self.conv1(preact)
        out = self.conv2(F.relu(self.bn2(out), inplace=True))
        out = self.conv3(F.relu(self.bn3(out), inplace=True))
        return out.add_(shortcut)


class ResNetV2(nn.Module):
    """Pre-activation ResNet trunk: images -> latents [N, 4 * widths[-1], 1, 1].

    The input is whatever the first convolution expects (for the LLR modules,
    ``2x - 1`` of a [0, 1] image); preprocessing lives in the wrapping model.

    Args:
        units: bottleneck units per stage, e.g. ``(3, 8, 36, 3)`` for ResNet-152.
        widths: bottleneck width per stage (outputs are 4x).
        in_channels: image channels.
        stem_width: channels of the stem convolution.
        padding, bn_eps, bn_momentum, stride_in, stem_bias, out_bias, bn_scale: see
            module doc.
    """

    def __init__(
        self,
        *,
        units: tuple[int, ...] = STAGE_UNITS[152],
        widths: tuple[int, ...] = STANDARD_WIDTHS,
        in_channels: int = 3,
        stem_width: int = 64,
        padding: Padding = "same",
        bn_eps: float = 1e-5,
        bn_momentum: float = 0.1,
        stride_in: StrideIn = "first",
        stem_bias: bool = False,
        out_bias: bool = False,
        bn_scale: bool = True,
    ) -> None:
        super().__init__()
        if len(units) != len(widths):
            raise UsageError(f"units {units} and widths {widths} differ in length")
        if stride_in not in ("first", "last"):
            raise UsageError(f"stride_in must be 'first' or 'last', got {stride_in!r}")
        if padding not in ("same", "symmetric"):
            raise UsageError(f"padding must be 'same' or 'symmetric', got {padding!r}")
        self.stem_conv = conv2d(in_channels, stem_width, 7, stride=2, padding=padding,
                                bias=stem_bias)
        self.stem_pool = max_pool(3, 2, padding)
        stages: list[nn.Sequential] = []
        channels = stem_width
        n_stages = len(units)
        for index, (count, width) in enumerate(zip(units, widths)):
            if stride_in == "first":
                stage_stride = 1 if index == 0 else 2
                strides = [stage_stride] + [1] * (count - 1)
            else:
                stage_stride = 1 if index == n_stages - 1 else 2
                strides = [1] * (count - 1) + [stage_stride]
            blocks = []
            for stride in strides:
                blocks.append(
                    BottleneckV2(channels, width, stride, padding=padding, bn_eps=bn_eps,
                                 bn_momentum=bn_momentum, out_bias=out_bias,
                                 bn_scale=bn_scale)
                )
                channels = 4 * width
            stages.append(nn.Sequential(*blocks))
        self.stages = nn.Sequential(*stages)
        self.final_bn = batch_norm(channels, eps=bn_eps, momentum=bn_momentum, scale=bn_scale)
        self.num_features = channels

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """[N, C, H, W] -> latents [N, num_features, 1, 1] (global average pool)."""
        x = self.stem_pool(self.stem_conv(x))
        x = self.stages(x)
        x = F.relu(self.final_bn(x), inplace=True)
        return x.mean(dim=(2, 3), keepdim=True)

    def import_structure(self) -> dict[str, Any]:
        """Units and bottleneck widths per stage, and the stem width."""
        stages = self._units()
        return {"units": tuple(len(units) for units in stages),
                "widths": tuple(units[0].conv1.out_channels for units in stages),
                "stem_width": self.stem_conv.out_channels}

    def import_layout(self, network: layout.Network, prefix: str = "") -> layout.Layout:
        """Stem, the units in stage order, final batch norm (the head is the wrapper's).

        Raises:
            InputError: ``network`` has a different number of units.
        """
        positions = [f"{prefix}stages.{s}.{i}" for s, units in enumerate(self._units())
                     for i in range(len(units))]
        if len(positions) != len(network.units):
            raise InputError(f"the network has {len(network.units)} units, this trunk "
                             f"{len(positions)}")
        targets = [layout.conv(network.stem, f"{prefix}stem_conv")]
        for module, unit in zip(positions, network.units):
            targets += layout.residual_unit(unit, module)
        targets.append(layout.batch_norm(network.final_bn, f"{prefix}final_bn"))
        return layout.Layout(tuple(targets))

    def _units(self) -> list[list[BottleneckV2]]:
        return [[cast(BottleneckV2, unit) for unit in cast(nn.Sequential, stage)]
                for stage in self.stages]
