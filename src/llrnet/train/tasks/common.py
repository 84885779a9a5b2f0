"""Pieces shared by the training tasks: the task protocol, batch checks, the
binary (bird-logit) loss."""

from __future__ import annotations

from typing import Protocol

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from llrnet.train.llr import linear_warmup

__all__ = [
    "BirdLogitView",
    "Task",
    "accuracy",
    "binary_cross_entropy_per_example",
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


def check_batch(batch: tuple[Tensor, Tensor]) -> tuple[Tensor, Tensor]:
    """Validate ``(x, y)``: x float [N, ...], y int64 [N] on x's device."""
    if not isinstance(batch, (tuple, list)) or len(batch) != 2:
        raise ValueError("a batch must be a pair (images [N, C, H, W], labels [N])")
    x, y = batch
    if not isinstance(x, Tensor) or not x.is_floating_point() or x.dim() < 2:
        raise ValueError("batch images must be a float tensor [N, C, H, W] in [0, 1]")
    if not isinstance(y, Tensor) or y.dtype != torch.int64 or y.shape != (x.shape[0],):
        raise ValueError(f"batch labels must be int64 [{x.shape[0]}], got "
                         f"{getattr(y, 'dtype', type(y))} {tuple(getattr(y, 'shape', ()))}")
    if y.device != x.device:
        raise ValueError(f"images are on {x.device} but labels on {y.device}")
    return x, y


def binary_cross_entropy_per_example(logits: Tensor, y: Tensor) -> Tensor:
    """BCE on the bird logit ``logits[:, 1]`` (sigmoid head), labels {0, 1} -> [N].

    The released bird-or-bicycle head is read through a sigmoid of channel 1,
    so it was trained with this loss; channel 0 gets no gradient.
    """
    return F.binary_cross_entropy_with_logits(logits[:, 1], y.to(logits.dtype),
                                              reduction="none")


class BirdLogitView(nn.Module):
    """``[N, K]`` logits -> ``[0, z]`` with ``z = logits[:, 1]``.

    Softmax cross-entropy of these two logits is exactly BCE on ``z`` (the softmax
    of ``[0, z]`` is ``[1 - sigmoid(z), sigmoid(z)]``), so a cross-entropy attack
    on the view is the BCE attack on the sigmoid head.
    """

    def __init__(self, model: nn.Module) -> None:
        super().__init__()
        self.model = model

    def forward(self, x: Tensor) -> Tensor:
        z = self.model(x)[:, 1]
        return torch.stack([torch.zeros_like(z), z], dim=1)


def accuracy(logits: Tensor, y: Tensor, *, binary: bool = False) -> Tensor:
    """Detached fraction of correct predictions (bird iff ``logits[:, 1] > 0`` if binary)."""
    with torch.no_grad():
        pred = (logits[:, 1] > 0).long() if binary else logits.argmax(dim=1)
        return (pred == y).float().mean()


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
