"""Worst-of-k spatial training (Engstrom et al. 2019): per image, the hardest of k random
rotations and translations. More: docs/training.md, "llrnet.train.tasks.spatial"."""

from __future__ import annotations

from dataclasses import dataclass
from functools import cache

import torch
from torch import Tensor, nn

from llrnet.attacks.geometry import pil_affine, pil_border
from llrnet.attacks.spatial_limits import spatial_limits
from llrnet.core.errors import UsageError
from llrnet.models.heads import Head

__all__ = ["WorstOfK", "WorstOfKChoice", "suite_spatial_limits"]

Limits = tuple[float, float, float]


@cache
def suite_spatial_limits(suite: str) -> tuple[Limits, float]:
    """``((dx px, dy px, angle deg), border_fraction)`` of an evaluation suite's spatial attacks.

    The elementwise maximum of the suite's grid and random spatial stage, from
    :mod:`llrnet.attacks.spatial_limits` (the constants the suites are built from).
    ``bird_or_bicycle``: (18, 30, 30) px, px, degrees (the executed grid
    shifts up to 30 px vertically, the random stage rotates up to 30 degrees),
    border 0.15; ``digits``: (10, 10, 10), border 0.15.
    """
    limits = spatial_limits(suite)
    return limits.worst_case(), limits.border_fraction


@dataclass(frozen=True)
class WorstOfKChoice:
    """What :meth:`WorstOfK.choose` picked.

    Attributes:
        images: [N, C, H, W] in [0, 1], each image under its chosen transform
            (8-bit levels / 255), or the untransformed image where that won.
        params: [N, k, 3] float64 (dx px, dy px, angle deg) of every candidate;
            the untransformed candidate (index 0 with ``include_original``) is
            all zeros.
        index: [N] int64, the chosen candidate of each image.
        losses: [N, k], the loss of every candidate (detached).
    """

    images: Tensor
    params: Tensor
    index: Tensor
    losses: Tensor


@dataclass(frozen=True)
class WorstOfK:
    """Per image, the candidate transform with the highest training loss.

    Args:
        k: candidates per image (Engstrom et al. use 10).
        suite: the evaluation suite whose spatial limits and border are the
            defaults (:func:`suite_spatial_limits`): ``bird_or_bicycle`` or ``digits``.
        limits: (dx px, dy px, angle deg); each candidate draws
            ``U(-limit, limit)`` per coordinate. None: the suite's.
        border_fraction: the grid's black border (None: the suite's, 0.15).
        include_original: candidate 0 is the untransformed image (no border), so
            clean images stay in the training distribution and are trained on
            whenever they are the hardest candidate; the other ``k - 1`` are
            random transforms.

    Cost: ``k`` forward passes of the batch without gradients (one batched
    forward of ``N * k`` images). Draws from torch's global RNG on the CPU
    (which the training loop seeds and checkpoints).
    """

    k: int = 10
    suite: str = "bird_or_bicycle"
    limits: Limits | None = None
    border_fraction: float | None = None
    include_original: bool = True

    def __post_init__(self) -> None:
        if self.k < 1:
            raise UsageError(f"spatial.k must be >= 1, got {self.k}")
        if self.limits is not None and any(not v >= 0 for v in self.limits):
            raise UsageError(f"spatial.limits must be >= 0, got {self.limits}")
        if self.border_fraction is not None and not 0 <= self.border_fraction < 0.5:
            raise UsageError(f"spatial.border_fraction must be in [0, 0.5), "
                             f"got {self.border_fraction}")

    def resolved(self) -> tuple[Limits, float]:
        """The limits and border fraction in use (the suite's where not given)."""
        if self.limits is not None and self.border_fraction is not None:
            return self.limits, self.border_fraction
        limits, border = suite_spatial_limits(self.suite)
        return (self.limits or limits,
                border if self.border_fraction is None else self.border_fraction)

    def sample(self, n: int, generator: torch.Generator | None = None) -> Tensor:
        """Candidate transforms [n, k, 3] float64, uniform within the limits."""
        limits, _ = self.resolved()
        u = torch.rand(n, self.k, 3, generator=generator, dtype=torch.float64)
        params = (2.0 * u - 1.0) * torch.tensor(limits, dtype=torch.float64)
        if self.include_original:
            params[:, 0] = 0.0
        return params

    def render(self, x: Tensor, params: Tensor) -> Tensor:
        """Images ``x`` [N, C, H, W] under candidates ``params`` [N, k, 3] -> [N, k, C, H, W].

        The spatial grid's rendering; the untransformed candidate (with
        ``include_original``) is ``x`` itself.
        """
        n, k = params.shape[:2]
        _, border = self.resolved()
        bordered = pil_border(x.detach(), border).repeat_interleave(k, dim=0)
        flat = params.reshape(n * k, 3)
        out = (pil_affine(bordered, flat[:, 0], flat[:, 1], flat[:, 2]) / 255.0).to(x.dtype)
        out = out.reshape(n, k, *x.shape[1:])
        if self.include_original:
            out[:, 0] = x.detach()
        return out

    def choose(self, model: nn.Module, x: Tensor, y: Tensor, head: Head,
               params: Tensor | None = None) -> WorstOfKChoice:
        """The worst candidate of each image under ``head``'s per-example loss.

        ``model`` is run as it is (the caller sets its mode and batch norm);
        no gradients. Ties go to the first candidate. ``params`` defaults to
        :meth:`sample`.
        """
        n = x.shape[0]
        params = self.sample(n) if params is None else params
        candidates = self.render(x, params)
        with torch.no_grad():
            flat = candidates.reshape(n * params.shape[1], *x.shape[1:])
            losses = head.per_example_loss(model(flat), y.repeat_interleave(params.shape[1]))
            losses = torch.nan_to_num(losses.float(), nan=float("inf")).reshape(n, -1)
        index = losses.argmax(dim=1)
        images = candidates[torch.arange(n, device=x.device), index]
        return WorstOfKChoice(images.contiguous(), params, index.cpu(), losses)
