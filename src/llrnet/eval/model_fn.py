"""Models as the runner sees them: an ``nn.Module``, or a numpy ``model_fn`` wrapped.
More: docs/evaluation.md, "llrnet.eval.model_fn"."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import numpy as np
import torch
from torch import nn

from llrnet.core.errors import InputError, UsageError

ModelFn = Callable[[np.ndarray], Any]


def check_model_fn_output(output: Any, count: int) -> np.ndarray:
    """Validate a ``model_fn`` result for ``count`` images: float32 (count, 2), finite."""
    if isinstance(output, torch.Tensor):
        raise InputError(
            "model_fn must return a numpy array, got a torch.Tensor; return tensor.numpy()"
        )
    if not isinstance(output, np.ndarray):
        raise InputError(f"model_fn must return a numpy array, got {type(output).__name__}")
    if output.ndim != 2 or output.shape != (count, 2):
        raise InputError(
            f"model_fn must return shape ({count}, 2) (column 0 bicycle, column 1 bird) "
            f"for {count} images, got {output.shape}"
        )
    if output.dtype != np.float32:
        raise InputError(
            f"model_fn must return float32 logits, got {output.dtype}; cast with "
            ".astype(np.float32)"
        )
    if not np.isfinite(output).all():
        bad = int((~np.isfinite(output)).any(axis=1).sum())
        raise InputError(f"model_fn returned NaN or infinite logits for {bad} of {count} images")
    return output


class ModelFnModule(nn.Module):
    """A forward-only module around a numpy ``model_fn`` (NHWC in, (N, 2) out).

    ``forward``: [N, C, H, W] float in [0, 1] on any device -> [N, 2] float32
    logits on the same device. Every output is validated. Calling it on an
    input that requires gradients raises :class:`UsageError`: a numpy function
    has no gradients, so white-box attacks need an ``nn.Module``.
    """

    def __init__(self, model_fn: ModelFn) -> None:
        super().__init__()
        self.model_fn = model_fn

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """[N, C, H, W] -> [N, 2] float32 logits (no gradients)."""
        if x.requires_grad and torch.is_grad_enabled():
            raise UsageError(
                "this attack needs gradients but the model is a numpy model_fn; "
                "pass an nn.Module or leave gradient-based attacks out (attacks=...)"
            )
        images = x.detach().permute(0, 2, 3, 1).to("cpu", torch.float32).contiguous().numpy()
        output = check_model_fn_output(self.model_fn(images), len(images))
        return torch.from_numpy(np.array(output, copy=True)).to(x.device)
