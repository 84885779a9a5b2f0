"""LLR training (Qin et al. 2019) with DeepMind's official CIFAR-10 configuration as defaults."""

from __future__ import annotations

from dataclasses import dataclass

import torch
from torch import Tensor, nn

from llrnet.core.errors import UsageError
from llrnet.models.heads import head_of
from llrnet.train.llr import LLROptions, llr_regularizer
from llrnet.train.tasks.common import RadiusWarmup, StepPasses, accuracy, check_batch

__all__ = ["LLRTask"]


@dataclass(frozen=True)
class LLRTask(RadiusWarmup):
    """``loss = nominal_weight * CE(x) + lam * [ gamma_i + mu * |d_i . G_i| ]_mean``.

    ``CE`` is the model's head's per-example loss (:func:`llrnet.models.head_of`):
    softmax cross-entropy, or BCE on the bird logit for a sigmoid bird head; the
    linearity deviation ``gamma`` is measured on that same loss.

    Exactly the step written out in ``docs/llr.md`` ("The LLR step, exactly"); see
    :func:`llrnet.train.llr.llr_regularizer` for the regularizer. The nominal
    pass and the clean LLR pass share one forward (identical inputs): it runs in
    training mode, updates batch-norm running averages once, and its batch
    statistics normalize every perturbed pass.

    Args (defaults: DeepMind's official CIFAR-10 configuration):
        eps: L-inf radius after warm-up (8/255).
        steps: inner Adam steps (10).
        lam: weight lambda of the regularizer (4.0).
        mu: weight of ``|d . G|`` inside the regularizer (0.3).
        nominal_weight: weight w_nom of the clean cross-entropy (2.0).
            Relative to a unit-weight CE this is lambda 2, mu 0.6; the
            third-party port's "lambda 4, mu 3 on a unit CE" is
            ``nominal_weight=1, lam=4, mu=3``.
        warmup_steps: eps grows linearly from 0 at step 0 to ``eps`` at this
            step (500); 0 disables the warm-up.
        lr, betas, adam_eps: the inner Adam (0.1, (0.9, 0.999), 1e-9).

    Returns ``{"loss", "ce", "gamma", "grad_term", "regularizer", "accuracy", "eps"}``:
    ``gamma`` is the batch mean of the linearity deviation at ``d_LLR``,
    ``grad_term`` the mean ``|d_LLR . G|``, all detached.
    """

    eps: float = 8 / 255
    steps: int = 10
    lam: float = 4.0
    mu: float = 0.3
    nominal_weight: float = 2.0
    warmup_steps: int = 500
    lr: float = 0.1
    betas: tuple[float, float] = (0.9, 0.999)
    adam_eps: float = 1e-9

    def __post_init__(self) -> None:
        LLROptions(eps=self.eps, steps=self.steps)  # the regularizer's checks of eps and steps
        if self.lam < 0 or self.mu < 0 or self.nominal_weight < 0:
            raise UsageError("lam, mu and nominal_weight must be >= 0")

    def passes_per_step(self) -> StepPasses:
        """steps + 2 forward-backward passes: the clean one (with the double
        back-propagation of its input gradient), one per inner step, and the
        regularizer's."""
        return StepPasses(self.steps + 2)

    def __call__(self, model: nn.Module, batch: tuple[Tensor, Tensor], step: int
                 ) -> dict[str, Tensor]:
        x, y = check_batch(batch)
        eps = self.eps_at(step)
        head = head_of(model)
        options = LLROptions(eps=eps, steps=self.steps, mu=self.mu, lr=self.lr,
                             betas=self.betas, adam_eps=self.adam_eps,
                             loss_fn=head.per_example_loss)
        terms = llr_regularizer(model, x, y, options, update_running_stats=True)
        ce = terms.clean_loss.mean()
        loss = self.nominal_weight * ce + self.lam * terms.regularizer
        return {
            "loss": loss,
            "ce": ce.detach(),
            "gamma": terms.deviation.detach().mean(),
            "grad_term": terms.grad_term.detach().mean(),
            "regularizer": terms.regularizer.detach(),
            "accuracy": accuracy(terms.clean_logits, y, head),
            "eps": torch.tensor(eps, device=x.device),
        }
