"""Transforms for each dataset. All end in float tensors in [0, 1] (CHW).
More: docs/data.md, "llrnet.data.transforms"."""

from __future__ import annotations

from collections.abc import Callable
from functools import partial
from typing import Any

import torch
import torch.nn.functional as F
from torch import Tensor
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


def random_crop(x: Tensor, pad: int, generator: torch.Generator | None, *,
                flip: bool) -> Tensor:
    """Reflect-pad by ``pad`` pixels and crop back to ``H x W`` at a random offset per
    image; with ``flip`` also mirror each image horizontally with probability 1/2.

    ``x`` is a float batch ``[N, C, H, W]``; the offsets ``[2, N]`` are drawn
    first, then the flips ``[N]``, from ``generator`` (None: torch's global
    generator). With ``flip`` and ``pad = 4`` this is the LLR paper's CIFAR-10
    augmentation.
    """
    n, _, h, w = x.shape
    if pad > 0:
        offsets = torch.randint(0, 2 * pad + 1, (2, n), generator=generator).to(x.device)
        padded = F.pad(x, (pad, pad, pad, pad), mode="reflect")
        rows = offsets[0][:, None] + torch.arange(h, device=x.device)  # [N, H]
        cols = offsets[1][:, None] + torch.arange(w, device=x.device)  # [N, W]
        batch = torch.arange(n, device=x.device)[:, None, None]
        x = padded.permute(0, 2, 3, 1)[batch, rows[:, :, None], cols[:, None, :]]
        x = x.permute(0, 3, 1, 2).contiguous()
    if flip:
        mirror = torch.rand(n, generator=generator).to(x.device) < 0.5
        x = torch.where(mirror[:, None, None, None], x.flip(-1), x)
    return x


def _flip_crop_one(image: Tensor, pad: int) -> Tensor:
    return random_crop(image[None], pad, None, flip=True)[0]


def cifar_train_transform(pad: int = 4) -> Transform:
    """The LLR paper's CIFAR-10 augmentation for one image: random horizontal flip,
    reflect-pad ``pad`` pixels, random crop back to the image size
    (:func:`random_crop`, drawing from torch's global generator, which DataLoader
    seeds per worker). Input and output: a ``[3, 32, 32]`` float tensor in [0, 1]."""
    return partial(_flip_crop_one, pad=pad)
