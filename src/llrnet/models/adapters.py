"""Adapters to the hub modules' and the challenge's calling conventions.
More: docs/models.md, "llrnet.models.adapters"."""

from __future__ import annotations

from collections.abc import Callable, Mapping
from typing import Any

import numpy as np
import torch
from torch import nn

from llrnet.core.contracts import check_materialized
from llrnet.core.devices import resolve_device
from llrnet.core.errors import InputError
from llrnet.core.modes import kept_as_given
from llrnet.models.classifier import BirdOrBicycleClassifier
from llrnet.models.heads import challenge_view

HubCall = Callable[[Mapping[str, Any]], torch.Tensor]
ModelFn = Callable[[np.ndarray], np.ndarray]


def _as_tensor(value: Any, name: str, device: torch.device) -> torch.Tensor:
    tensor = torch.as_tensor(value)
    if not tensor.is_floating_point():
        raise InputError(f"{name} must be a float tensor, got dtype {tensor.dtype}")
    return tensor.to(device=device, dtype=torch.float32)


def _set_bn_momentum(module: nn.Module, decay_rate: float) -> None:
    for layer in module.modules():
        if isinstance(layer, nn.modules.batchnorm._BatchNorm):
            layer.momentum = decay_rate


def latents_module(model: BirdOrBicycleClassifier) -> HubCall:
    """The ``llr-pretrain-adv/latents`` signature over ``model``'s trunk.

    ``call(dict(inputs=[N, H, W, 3] in [-1, 1], decay_rate=0.1))`` -> latents
    [N, 1, 1, C] (NHWC). Like the module, it takes *preprocessed* inputs (the
    submission's crop/resize/``2x - 1`` happens before). ``decay_rate`` is the
    batch-norm moving-average rate used in training mode; in eval mode it
    changes nothing.
    """
    device = next(model.parameters()).device

    def call(signature: Mapping[str, Any]) -> torch.Tensor:
        if "inputs" not in signature:
            raise InputError(f"latents module needs key 'inputs'; got {sorted(signature)}")
        x = _as_tensor(signature["inputs"], "inputs", device)
        if x.dim() != 4 or x.shape[-1] != 3:
            raise InputError(f"inputs must be [N, H, W, 3], got {list(x.shape)}")
        _set_bn_momentum(model.trunk, float(signature.get("decay_rate", 0.1)))
        latents = model.trunk(x.permute(0, 3, 1, 2))
        return latents.permute(0, 2, 3, 1)

    return call


def linear_module(model: BirdOrBicycleClassifier) -> HubCall:
    """The ``llr-pretrain-adv/linear`` signature: latents [N, 1, 1, C] -> [N, 1, 1, 2]."""
    device = next(model.parameters()).device

    def call(signature: Mapping[str, Any]) -> torch.Tensor:
        if "inputs" not in signature:
            raise InputError(f"linear module needs key 'inputs'; got {sorted(signature)}")
        x = _as_tensor(signature["inputs"], "inputs", device)
        if x.dim() != 4:
            raise InputError(f"inputs must be [N, 1, 1, C] latents, got {list(x.shape)}")
        return model.linear(x.permute(0, 3, 1, 2)).permute(0, 2, 3, 1)

    return call


def validate_challenge_images(images: Any) -> np.ndarray:
    """Check a challenge batch: numpy float32 [N, H, W, 3], finite, in [0, 1].
    Returns it."""
    if not isinstance(images, np.ndarray):
        raise InputError(f"images must be a numpy array, got {type(images).__name__}")
    if images.ndim != 4:
        raise InputError(f"images must have rank 4 (N, H, W, 3), got shape {images.shape}")
    if images.shape[-1] != 3:
        raise InputError(f"images must have 3 channels last (NHWC), got shape {images.shape}")
    if images.dtype != np.float32:
        raise InputError(f"images must be float32, got {images.dtype}")
    if not np.isfinite(images).all():
        raise InputError("images contain NaN or infinite values")
    if images.size and (images.min() < 0.0 or images.max() > 1.0):
        hint = "; 8-bit images need x / 255" if images.max() > 1.0 else ""
        raise InputError(f"images must lie in [0, 1], got values in "
                         f"[{images.min():.4g}, {images.max():.4g}]{hint}")
    return images


def as_model_fn(
    model: nn.Module,
    *,
    batch_size: int = 32,
    device: str | torch.device | None = None,
) -> ModelFn:
    """The challenge's ``model_fn`` for ``model``: NHWC float32 -> (N, 2) float32.

    ``model`` is scored through its challenge view
    (:func:`~llrnet.models.heads.challenge_view`): the two-class logits of a
    sigmoid bird head such as :class:`BirdOrBicycleClassifier`, or the output of
    a module already returning [N, 2] challenge logits. The model is run in eval
    mode without gradients, ``batch_size`` images at a time; between calls it is
    left in the mode the caller gave it (:func:`llrnet.core.modes.kept_as_given`).
    ``device`` (default: the model's) moves the model there once, here.
    """
    if batch_size < 1:
        raise InputError(f"batch_size must be >= 1, got {batch_size}")
    check_materialized(model)
    target = resolve_device(device) if device is not None else next(model.parameters()).device
    model = model.to(target)
    forward = challenge_view(model)

    def model_fn(images: np.ndarray) -> np.ndarray:
        validate_challenge_images(images)
        outputs = []
        with kept_as_given(model), torch.inference_mode():
            model.eval()
            for start in range(0, len(images), batch_size):
                chunk = torch.from_numpy(images[start : start + batch_size]).to(target)
                logits = forward(chunk.permute(0, 3, 1, 2).contiguous())
                outputs.append(logits.float().cpu().numpy())
        if not outputs:
            return np.zeros((0, 2), dtype=np.float32)
        return np.concatenate(outputs).astype(np.float32, copy=False)

    return model_fn
