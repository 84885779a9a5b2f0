"""Pieces shared by the training tasks: the task protocol, batch checks, accuracy
and the eps warm-up. More: docs/training.md, "llrnet.train.tasks.common"."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Protocol

import torch
from torch import Tensor, nn

from llrnet.core.contracts import check_images
from llrnet.core.errors import InputError
from llrnet.models.heads import Head
from llrnet.train.llr import linear_warmup

__all__ = [
    "StepPasses",
    "Task",
    "accuracy",
    "check_batch",
]


class Task(Protocol):
    """``task(model, batch, step) -> {"loss": scalar to back-propagate, **detached terms}``.

    ``batch = (x [N, C, H, W] float in [0, 1], y int64 [N])``; ``step`` is the
    optimizer step about to be taken, counted from 0 (schedules such as the
    eps warm-up read it).
    """

    def __call__(self, model: nn.Module, batch: tuple[Tensor, Tensor], step: int
                 ) -> dict[str, Tensor]: ...


@dataclass(frozen=True)
class StepPasses:
    """What one training step costs, in passes of the step's batch through the model.

    Attributes:
        forward_backward: forward passes whose graph is back-propagated (the
            attack's and the regularizer's inner steps included; LLR's
            double back-propagation counts with its forward).
        forward_only: forward passes without gradients (worst-of-k's selection).
    """

    forward_backward: int
    forward_only: int = 0


def check_batch(batch: tuple[Tensor, Tensor]) -> tuple[Tensor, Tensor]:
    """Validate ``(x, y)``: x float [N, C, H, W], y int64 [N] on x's device.

    The images get :func:`llrnet.core.contracts.check_images` without the value
    checks (which would synchronize the GPU every step).

    Raises:
        InputError: naming what is wrong.
    """
    if not isinstance(batch, (tuple, list)) or len(batch) != 2:
        raise InputError("a batch must be a pair (images [N, C, H, W], labels [N])")
    x, y = batch
    check_images(x, "batch images", values=False)
    if not isinstance(y, Tensor) or y.dtype != torch.int64 or y.shape != (x.shape[0],):
        raise InputError(f"batch labels must be int64 [{x.shape[0]}], got "
                         f"{getattr(y, 'dtype', type(y))} {tuple(getattr(y, 'shape', ()))}")
    if y.device != x.device:
        raise InputError(f"images are on {x.device} but labels on {y.device}")
    return x, y


def accuracy(logits: Tensor, y: Tensor, head: Head) -> Tensor:
    """Detached fraction of correct predictions of ``head`` (:meth:`Head.predict`)."""
    with torch.no_grad():
        return (head.predict(logits) == y).float().mean()


class RadiusWarmup:
    """Mixin for tasks with ``eps``, ``warmup_steps`` and optionally ``step_size``:
    the radius grows linearly from 0 to ``eps`` over the first ``warmup_steps``
    optimizer steps, and attack step sizes shrink with it."""

    eps: float
    warmup_steps: int

    def eps_at(self, step: int) -> float:
        """The warmed-up radius used at optimizer step ``step`` (counted from 0)."""
        return linear_warmup(self.eps, step, self.warmup_steps)

    def scaled_step_size(self, step_size: float, eps: float) -> float:
        """``step_size`` scaled by the warm-up fraction ``eps / self.eps``."""
        return step_size * (eps / self.eps if self.eps > 0 else 0.0)
