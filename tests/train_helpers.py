"""A tiny seeded conv net with batch norm, shared by the training-task tests."""

from __future__ import annotations

import torch
from torch import nn


def tiny_bn_net(classes: int, size: int = 8) -> nn.Sequential:
    """Two conv + batch-norm + softplus layers and a linear head, seeded (``manual_seed(0)``).

    Takes [N, 1, size, size] images (``size`` even) and returns [N, classes] logits;
    built in training mode.
    """
    torch.manual_seed(0)
    return nn.Sequential(
        nn.Conv2d(1, 4, 3, padding=1), nn.BatchNorm2d(4), nn.Softplus(),
        nn.Conv2d(4, 4, 3, stride=2, padding=1), nn.BatchNorm2d(4), nn.Softplus(),
        nn.Flatten(), nn.Linear(4 * (size // 2) ** 2, classes),
    )
