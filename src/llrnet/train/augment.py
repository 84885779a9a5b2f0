"""Batch augmentation on the device, driven by an explicit ``torch.Generator``.

The loop seeds one generator per ``(seed, step, rank)``, so augmentation never
touches the global RNG and a resumed run draws the same transformations.
Images are float ``[N, C, H, W]`` in [0, 1] and stay in [0, 1]. The crops
(``flip_crop``, ``crop``) are the data area's recipe
(:func:`llrnet.data.transforms.random_crop`), the one CIFAR datasets use.
"""

from __future__ import annotations

import math

import torch
import torch.nn.functional as F
from torch import Tensor

from llrnet.data.transforms import random_crop
from llrnet.errors import UsageError


def random_rotate_translate(x: Tensor, max_rotation: float, max_shift: float,
                            generator: torch.Generator) -> Tensor:
    """Rotate each image by U(-max_rotation, max_rotation) degrees about its center and
    shift it by U(-max_shift, max_shift) pixels in x and y; bilinear, black fill.

    These are the limits of the challenge's random spatial attack (30 degrees,
    18 pixels at 224x224), used in training as augmentation.
    """
    n, _, h, w = x.shape
    draws = (torch.rand(3, n, generator=generator) * 2 - 1).to(x.device, x.dtype)
    angle = draws[0] * math.radians(max_rotation)
    # affine_grid works in normalized coordinates in [-1, 1]: a shift of s pixels is 2 s / size.
    shift_x, shift_y = draws[1] * max_shift * 2 / w, draws[2] * max_shift * 2 / h
    cos, sin = torch.cos(angle), torch.sin(angle)
    theta = torch.stack([
        torch.stack([cos, -sin * h / w, -shift_x], dim=1),
        torch.stack([sin * w / h, cos, -shift_y], dim=1),
    ], dim=1)
    grid = F.affine_grid(theta, list(x.shape), align_corners=False)
    out = F.grid_sample(x, grid, mode="bilinear", padding_mode="zeros", align_corners=False)
    return out.clamp_(0.0, 1.0)


def augment(x: Tensor, kind: str, generator: torch.Generator, *, pad: int = 4,
            max_rotation: float = 30.0, max_shift: float = 18.0) -> Tensor:
    """Apply the augmentation ``kind`` (see ``DataConfig.augment``) to a batch."""
    kinds = {
        "none": lambda: x,
        "flip_crop": lambda: random_crop(x, pad, generator, flip=True),
        "crop": lambda: random_crop(x, pad, generator, flip=False),
        "rotate_translate": lambda: random_rotate_translate(x, max_rotation, max_shift,
                                                            generator),
    }
    if kind not in kinds:
        raise UsageError(f"unknown augmentation {kind!r}; choose one of: {', '.join(kinds)}")
    return kinds[kind]()
