"""The reference kit's PyTorch baseline architecture: torchvision ResNet-50 with a BN input.

``examples/undefended_pytorch_resnet/main.py`` of the kit trained
``torchvision.models.resnet50(num_classes=2)`` from scratch with an
``nn.BatchNorm2d(3, affine=False)`` in front: the attacks feed [0, 1] images,
so the input normalization is learned as batch-norm running statistics instead
of the usual ImageNet mean and std. Registered as ``resnet50_kit``; its two
logits are softmax logits in the challenge's order (0 bicycle, 1 bird; the
class folders' alphabetical order). Preset: ``bird_or_bicycle_kit_resnet50``.
"""

from __future__ import annotations

from torch import nn

from llrnet.models.registry import register_model


@register_model
def resnet50_kit(*, num_classes: int = 2) -> nn.Sequential:
    """[N, 3, H, W] in [0, 1] -> BatchNorm2d(3, affine=False) -> torchvision ResNet-50 -> [N, K]."""
    import torchvision  # deferred: heavy (torchvision)

    return nn.Sequential(nn.BatchNorm2d(3, affine=False),
                         torchvision.models.resnet50(weights=None, num_classes=num_classes))
