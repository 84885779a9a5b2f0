"""The reference kit's PyTorch baseline architecture: torchvision ResNet-50 with a BN input.
More: docs/models.md, "llrnet.models.kit_baselines"."""

from __future__ import annotations

from torch import nn

from llrnet.models.registry import register_model


@register_model
def resnet50_kit(*, num_classes: int = 2) -> nn.Sequential:
    """[N, 3, H, W] in [0, 1] -> BatchNorm2d(3, affine=False) -> torchvision ResNet-50 -> [N, K]."""
    import torchvision  # deferred: heavy (torchvision)

    return nn.Sequential(nn.BatchNorm2d(3, affine=False),
                         torchvision.models.resnet50(weights=None, num_classes=num_classes))
