"""The two tensor contracts every layer checks: images in, logits out.
More: docs/core.md, "llrnet.core.contracts"."""

from __future__ import annotations

from typing import Any

import torch
from torch import Tensor

from llrnet.core.errors import InputError

__all__ = ["SCALE_LIMITS", "check_images", "check_logits", "check_materialized", "check_scale"]


def check_images(x: Any, name: str = "images", *, values: bool = True) -> Tensor:
    """Check that ``x`` is a float tensor [N, C, H, W] in [0, 1]; return it.

    Args:
        x: the images.
        name: what to call them in the message ("x", "batch images", ...).
        values: also check that every value is finite and in [0, 1]. These two
            checks read the data (on a GPU, a synchronization); a training
            step, which checks every batch, leaves them out.

    Raises:
        InputError: naming the first broken rule (type, dtype, rank, NaN or
            infinity, range) and what was found.
    """
    if not isinstance(x, Tensor):
        raise InputError(f"{name} must be a torch.Tensor, got {type(x).__name__}")
    if not x.is_floating_point():
        raise InputError(f"{name} must be a float tensor in [0, 1], got dtype {x.dtype}")
    if x.dim() != 4:
        raise InputError(f"{name} must be [N, C, H, W], got shape {list(x.shape)}")
    if values and x.numel():
        if x.device.type == "meta":
            raise InputError(f"{name} is on the meta device: it holds no values")
        if not bool(torch.isfinite(x).all()):
            raise InputError(f"{name} contains NaN or infinite values")
        low, high = float(x.min()), float(x.max())
        if low < 0.0 or high > 1.0:
            raise InputError(f"{name} must lie in [0, 1], got range [{low:.4g}, {high:.4g}]"
                             + ("; convert 8-bit images with x / 255" if high > 1.0 else ""))
    return x


SCALE_LIMITS = (-1.0, 2.0)
"""Values outside these mean another scale, not a [0, 1] image a little off.

Attack probes may lie slightly outside [0, 1] (SPSA's are ``x +- delta``),
so a model cannot demand [0, 1] exactly; 8-bit values (up to 255) or a
second normalization (ImageNet-normalized pixels reach -2.1 and 2.6) fall
outside these limits."""


def check_scale(x: Tensor, name: str = "the model's input") -> Tensor:
    """Refuse images on another scale than [0, 1] (0-255, or normalized); return ``x``.

    Cheaper and looser than :func:`check_images` (one min-max pass, no rank or
    dtype rules): for a model's forward, which sees every attack probe. It
    reads the data, so on a GPU it synchronizes; it is skipped while
    ``torch.compile`` traces.

    Raises:
        InputError: a NaN, or a value below -1 or above 2, with the range found.
    """
    if x.numel() == 0 or torch.compiler.is_compiling():
        return x
    low, high = SCALE_LIMITS
    extremes = torch.aminmax(x.detach())  # one pass, one synchronization
    found_low, found_high = extremes.min.item(), extremes.max.item()
    if found_low != found_low or found_high != found_high:  # min and max propagate NaN
        raise InputError(f"{name} contains NaN values")
    if found_low < low or found_high > high:
        hint = ("; 8-bit images need x / 255" if found_high > high
                else "; give unnormalized images (the model normalizes them itself)")
        raise InputError(f"{name} must be images in [0, 1], got values in "
                         f"[{found_low:.4g}, {found_high:.4g}]{hint}")
    return x


def check_logits(output: Any, count: int, *, num_classes: int | None = None,
                 finite: bool = True) -> Tensor:
    """Check that a model returned logits for ``count`` images; return them.

    Args:
        output: what the model returned.
        count: the number of images it was given.
        num_classes: the labels' classes, if known: K must be at least this.
        finite: also check that every logit is finite (reads the data; an
            attack's inner loop, which checks every forward, leaves it out).

    Raises:
        InputError: not a tensor, not [count, K] with K >= 2, fewer logits
            than classes, not floating point, or NaN/infinite logits.
    """
    if not isinstance(output, Tensor):
        raise InputError(f"the model must return a tensor of logits, got {type(output).__name__}")
    if output.dim() != 2 or output.shape[0] != count:
        raise InputError(
            f"the model must map [N, C, H, W] images to logits [N, K]: logits of shape "
            f"[{count}, K] with K >= 2 for {count} images, got {list(output.shape)}"
        )
    if output.shape[1] < 2:
        raise InputError(
            f"the model must return at least 2 logits per image (K >= 2), got {output.shape[1]}"
        )
    if num_classes is not None and output.shape[1] < num_classes:
        raise InputError(
            f"the model returns {output.shape[1]} logits per image but the labels need "
            f"{num_classes} classes"
        )
    if not output.is_floating_point():
        raise InputError(f"the model must return floating-point logits, got {output.dtype}")
    if finite and not bool(torch.isfinite(output).all()):
        bad = int((~torch.isfinite(output)).any(dim=1).sum())
        raise InputError(f"the model returned NaN or infinite logits for {bad} of {count} images")
    return output


def check_materialized(model: torch.nn.Module, what: str = "the model") -> torch.nn.Module:
    """Refuse a module with a tensor on the meta device (shapes only, no values: built
    with ``device="meta"`` and never loaded); return ``model``.

    Raises:
        InputError: naming the first such parameter or buffer.
    """
    for name, tensor in [*model.named_parameters(), *model.named_buffers()]:
        if tensor.is_meta:
            raise InputError(f"{what}'s tensor {name!r} is on the meta device (it holds no "
                             "values); load or initialize the model first")
    return model
