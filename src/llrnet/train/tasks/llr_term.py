"""An LLR regularizer added to an adversarial task's loss (option ``llr`` of PGD and TRADES).
More: docs/training.md, "llrnet.train.tasks.llr_term"."""

from __future__ import annotations

from dataclasses import dataclass

import torch
from torch import Tensor, nn

from llrnet.core.errors import UsageError
from llrnet.models.heads import Head
from llrnet.train.llr import LLROptions, linear_warmup, llr_regularizer

__all__ = ["LLRTerm"]


@dataclass(frozen=True)
class LLRTerm:
    """``+ lam * R(x)``: the LLR regularizer of the task's loss around ``x``.

    Args:
        lam: weight lambda of the regularizer, relative to the adversarial
            loss's weight 1.
        mu: weight of ``|d . G|`` inside the regularizer.
        steps: inner Adam steps of the deviation's maximization.
        eps: L-inf radius of the regularizer's ball; None uses the task's
            (warmed-up) attack radius.
        lr: the inner Adam's step size.

    Cost: ``steps + 2`` forward-backward passes per training step (the clean
    pass with the double back-propagation of its input gradient, one per
    inner step, the perturbed pass). The clean pass runs in training mode with
    its own batch statistics and leaves the running averages alone (the
    task's own training-mode forward updates them).
    """

    lam: float = 1.0
    mu: float = 0.03
    steps: int = 2
    eps: float | None = None
    lr: float = 0.1

    def __post_init__(self) -> None:
        if not self.lam >= 0 or not self.mu >= 0:
            raise UsageError(f"llr.lam and llr.mu must be >= 0, got {self.lam}, {self.mu}")
        if self.steps < 0:
            raise UsageError(f"llr.steps must be >= 0, got {self.steps}")
        if self.eps is not None and not self.eps >= 0:
            raise UsageError(f"llr.eps must be >= 0 or null, got {self.eps}")
        if not self.lr > 0:
            raise UsageError(f"llr.lr must be > 0, got {self.lr}")

    def passes(self) -> int:
        """Forward-backward passes this term adds to a training step."""
        return self.steps + 2

    def radius(self, task_eps: float, step: int, warmup_steps: int) -> float:
        """The ball's radius at optimizer step ``step``: the task's warmed-up radius
        ``task_eps`` when ``eps`` is None, else ``eps`` under the same linear warm-up."""
        return task_eps if self.eps is None else linear_warmup(self.eps, step, warmup_steps)

    def __call__(self, model: nn.Module, x: Tensor, y: Tensor, head: Head, eps: float
                 ) -> tuple[Tensor, dict[str, Tensor]]:
        """``(lam * R, {"llr_regularizer", "llr_gamma"})`` at radius ``eps``.

        ``x`` [N, C, H, W] in [0, 1], ``y`` int64 [N]. ``lam * R`` is attached
        (add it to the loss); the logged terms are detached scalars.
        """
        options = LLROptions(eps=eps, steps=self.steps, mu=self.mu, lr=self.lr,
                             loss_fn=head.per_example_loss)
        terms = llr_regularizer(model, x.detach(), y, options, update_running_stats=False)
        return self.lam * terms.regularizer, {
            "llr_regularizer": terms.regularizer.detach(),
            "llr_gamma": terms.deviation.detach().mean().to(torch.float32),
        }
