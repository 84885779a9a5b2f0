"""Batch augmentation on the device, driven by an explicit ``torch.Generator``.

The loop seeds one generator per ``(seed, step, rank)``, so augmentation never
touches the global RNG and a resumed run draws the same transformations.
Images are float ``[N, C, H, W]`` in [0, 1] and stay in [0, 1]. The crops
(``flip_crop``, ``crop``) are the data area's recipe
(:func:`llrnet.data.transforms.random_crop`), the one CIFAR datasets use.
"""

from __future__ import annotations

import math
from collections.abc import Callable
from typing import Literal, get_args

import torch
import torch.nn.functional as F
from torch import Tensor

from llrnet.data.transforms import random_crop
from llrnet.errors import UsageError

Augment = Literal["none", "flip_crop", "crop", "rotate_translate"]
"""The batch augmentations by name (``DataConfig.augment``); :func:`augment` applies them."""


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


_AUGMENTATIONS: dict[str, Callable[..., Tensor]] = {
    "none": lambda x, g, pad, rot, shift: x,
    "flip_crop": lambda x, g, pad, rot, shift: random_crop(x, pad, g, flip=True),
    "crop": lambda x, g, pad, rot, shift: random_crop(x, pad, g, flip=False),
    "rotate_translate": lambda x, g, pad, rot, shift: random_rotate_translate(x, rot, shift, g),
}
"""One implementation per name of :data:`Augment` (a test checks they agree)."""


def augment(x: Tensor, kind: str, generator: torch.Generator, *, pad: int = 4,
            max_rotation: float = 30.0, max_shift: float = 18.0) -> Tensor:
    """Apply the augmentation ``kind`` (one of :data:`Augment`) to a batch."""
    if kind not in _AUGMENTATIONS:
        raise UsageError(f"unknown augmentation {kind!r}; choose one of: "
                         f"{', '.join(get_args(Augment))}")
    return _AUGMENTATIONS[kind](x, generator, pad, max_rotation, max_shift)
