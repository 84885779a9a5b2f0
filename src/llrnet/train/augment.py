"""Batch augmentation on the device, driven by an explicit ``torch.Generator``.
More: docs/training.md, "llrnet.train.augment"."""

from __future__ import annotations

import math
from collections.abc import Callable
from typing import Literal, get_args

import torch
import torch.nn.functional as F
from torch import Tensor

from llrnet.core.errors import UsageError
from llrnet.data.transforms import random_crop

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


#: Grid sizes of the random field's octaves: 2x2, 4x4 and 8x8 cells, upsampled bilinearly.
FIELD_OCTAVES: tuple[int, ...] = (2, 4, 8)


def low_frequency_field(n: int, h: int, w: int, generator: torch.Generator) -> Tensor:
    """``n`` random smooth gray fields ``[n, 1, h, w]``, each stretched to span [0, 1].

    The sum of octaves of uniform noise on coarse grids (:data:`FIELD_OCTAVES`),
    each upsampled bilinearly to ``h x w`` and weighted by its cell size, so
    the coarse structure dominates, as in a plasma fractal (what ImageNet-C's
    fog adds).
    """
    field = torch.zeros(n, 1, h, w)
    for cells in FIELD_OCTAVES:
        noise = torch.rand(n, 1, cells, cells, generator=generator)
        field += F.interpolate(noise, size=(h, w), mode="bilinear", align_corners=False) / cells
    low = field.amin(dim=(1, 2, 3), keepdim=True)
    high = field.amax(dim=(1, 2, 3), keepdim=True)
    return (field - low) / (high - low).clamp_min(1e-12)


def random_contrast_field(x: Tensor, probability: float, min_contrast: float,
                          generator: torch.Generator) -> Tensor:
    """Lower the contrast of a random share of the images towards a smooth random field.

    Each image is picked with ``probability``; a picked image becomes
    ``a * x + (1 - a) * f`` with ``a ~ U(min_contrast, 1)`` and ``f`` a
    :func:`low_frequency_field` times ``b ~ U(0, 1)`` (its brightness), the same
    on every channel. A convex blend of two images in [0, 1], so the result
    stays in [0, 1]. It covers the shape of the photometric corruptions that
    geometric and L-inf training do not: fog (ImageNet-C's fog at severity 1 is
    ``a = 0.4`` with a plasma field) and contrast (a flat field). Images
    ``[N, C, H, W]``; every draw comes from ``generator``, on the CPU.
    """
    if not 0.0 <= probability <= 1.0:
        raise UsageError(f"photometric probability must be in [0, 1], got {probability}")
    if not 0.0 <= min_contrast <= 1.0:
        raise UsageError(f"min_contrast must be in [0, 1], got {min_contrast}")
    n, _, h, w = x.shape
    picked = torch.rand(n, generator=generator) < probability
    contrast = min_contrast + (1.0 - min_contrast) * torch.rand(n, generator=generator)
    brightness = torch.rand(n, generator=generator)
    field = low_frequency_field(n, h, w, generator) * brightness.view(n, 1, 1, 1)
    a = torch.where(picked, contrast, 1.0).view(n, 1, 1, 1).to(x.device, x.dtype)
    blended = a * x + (1 - a) * field.to(x.device, x.dtype)
    return blended.clamp_(0.0, 1.0)


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
