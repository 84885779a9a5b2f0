"""Transforms for each dataset. All end in float tensors in [0, 1] (CHW).

Normalization (mean/std) is deliberately absent: it lives inside the models.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

from torchvision import transforms as T
from torchvision.transforms import InterpolationMode

Transform = Callable[[Any], Any]


def challenge_eval_transform(size: int = 224) -> Transform:
    """What the challenge's models see: Resize(224) bilinear (antialiased, like PIL),
    then float32 in [0, 1]."""
    return T.Compose([
        T.Resize(size, interpolation=InterpolationMode.BILINEAR, antialias=True),
        T.ToTensor(),
    ])


def imagenet_train_transform(size: int = 224) -> Transform:
    """Standard ImageNet training augmentation: RandomResizedCrop (scale 0.08..1,
    bilinear) + horizontal flip, float in [0, 1]."""
    return T.Compose([
        T.RandomResizedCrop(size, interpolation=InterpolationMode.BILINEAR, antialias=True),
        T.RandomHorizontalFlip(),
        T.ToTensor(),
    ])


def imagenet_eval_transform(size: int = 224, resize: int | None = None) -> Transform:
    """Standard ImageNet validation transform: Resize(256) + CenterCrop(224)
    (the 0.875 crop ratio), float in [0, 1]."""
    resize = resize if resize is not None else round(size / 0.875)
    return T.Compose([
        T.Resize(resize, interpolation=InterpolationMode.BILINEAR, antialias=True),
        T.CenterCrop(size),
        T.ToTensor(),
    ])


def cifar_train_transform() -> Transform:
    """The LLR paper's CIFAR-10 augmentation: random horizontal flip, reflect-pad 4
    pixels, random 32x32 crop. Input: a ``[3, 32, 32]`` float tensor in [0, 1]."""
    return T.Compose([
        T.RandomHorizontalFlip(),
        T.RandomCrop(32, padding=4, padding_mode="reflect"),
    ])
