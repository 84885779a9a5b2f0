"""Adversarial-training baselines: Madry PGD and TRADES, on the PGD code of ``llrnet.attacks``.
The attack's passes use each batch's own statistics without updating the running averages
(``attack_bn="batch"``, as Madry et al.'s TF1 code did).
More: docs/training.md, "llrnet.train.tasks.adversarial"."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Literal

import torch
from torch import Tensor, nn

from llrnet.attacks.balls import LinfBall
from llrnet.attacks.pgd import pgd_perturb, pgd_steps
from llrnet.core.errors import UsageError
from llrnet.models.heads import Head, head_of
from llrnet.train.bn_replay import frozen_batch_norm
from llrnet.train.tasks.common import RadiusWarmup, StepPasses, accuracy, check_batch
from llrnet.train.tasks.llr_term import LLRTerm
from llrnet.train.tasks.spatial import WorstOfK
from llrnet.train.unwrap import unwrap_ddp

__all__ = ["PGDTask", "TRADESTask"]

AttackBN = Literal["batch", "eval"]


def _check_common(eps: float, steps: int, step_size: float, attack_bn: str,
                  logit_margin: float) -> None:
    if not eps >= 0:
        raise UsageError(f"eps must be >= 0, got {eps}")
    if steps < 0:
        raise UsageError(f"steps must be >= 0, got {steps}")
    if not step_size >= 0:
        raise UsageError(f"step_size must be >= 0, got {step_size}")
    if attack_bn not in ("batch", "eval"):
        raise UsageError(f"attack_bn must be 'batch' or 'eval', got {attack_bn!r}")
    if not logit_margin >= 0:
        raise UsageError(f"logit_margin must be >= 0, got {logit_margin}")


def _trained_loss(head: Head, logits: Tensor, y: Tensor, plain: Tensor,
                  logit_margin: float) -> Tensor:
    """``plain`` (the head's loss of ``logits``) at margin 0; else the loss of ``logits``
    moved ``logit_margin`` against the true class
    (:meth:`~llrnet.models.heads.Head.with_margin`)."""
    if logit_margin == 0:
        return plain
    return head.loss(head.with_margin(logits, y, logit_margin), y)


@dataclass(frozen=True)
class _Attacked:
    """What both adversarial tasks start a step from."""

    x: Tensor
    original: Tensor
    y: Tensor
    eps: float
    step_size: float
    inner: nn.Module
    head: Head
    logged: dict[str, Tensor]


def _begin(task: PGDTask | TRADESTask, model: nn.Module, batch: tuple[Tensor, Tensor],
           step: int) -> _Attacked:
    """Check the batch; the warmed-up radius and step size; the unwrapped model; its head;
    with ``task.spatial``, each image replaced by its worst transform."""
    x, y = check_batch(batch)
    original = x
    eps = task.eps_at(step)
    inner, head = unwrap_ddp(model), head_of(model)
    logged: dict[str, Tensor] = {}
    if task.spatial is not None:
        with frozen_batch_norm(inner, mode=task.attack_bn):
            choice = task.spatial.choose(inner, x, y, head)
        x = choice.images
        chosen = choice.losses.gather(1, choice.index.to(x.device)[:, None])
        logged = {"spatial_loss": chosen.mean()}
        if task.spatial.include_original:
            logged["spatial_original"] = (choice.index == 0).float().mean().to(x.device)
    return _Attacked(x, original, y, eps, task.scaled_step_size(task.step_size, eps), inner, head,
                     logged)


def _spatial_passes(spatial: WorstOfK | None) -> int:
    return 0 if spatial is None else spatial.k


def _llr_passes(llr: LLRTerm | None) -> int:
    return 0 if llr is None else llr.passes()


def _with_llr(task: PGDTask | TRADESTask, run: _Attacked, step: int,
              out: dict[str, Tensor]) -> dict[str, Tensor]:
    """``out`` with ``task.llr``'s weighted regularizer (around ``run.x``) added to its
    ``"loss"`` and the regularizer's terms logged; ``out`` itself without ``task.llr``."""
    if task.llr is None:
        return out
    eps = task.llr.radius(run.eps, step, task.warmup_steps)
    weighted, logged = task.llr(run.inner, run.x, run.y, run.head, eps)
    return {**out, "loss": out["loss"] + weighted, **logged}


@dataclass(frozen=True)
class PGDTask(RadiusWarmup):
    """Madry et al. adversarial training: the head's loss of ``model(PGD(x))``, L-inf.

    The loss (softmax CE, or BCE on the bird logit) and the attack's view
    come from the model's head (:func:`llrnet.models.head_of`): a sigmoid bird
    head is attacked through ``[0, l]``, whose softmax CE is that BCE.

    Args:
        eps: L-inf radius after warm-up (8/255, the CIFAR-10 setting).
        steps: PGD steps K (10). K = 0 with ``random_start`` is training on
            uniform noise in the ball.
        step_size: per-step change per pixel (2/255); scaled with eps during warm-up.
        random_start: start uniformly in the ball (Madry et al.: yes).
        loss: the attack's loss, "ce" or "margin".
        attack_bn: batch-norm statistics during the attack, "batch" or "eval"
            (see the module docstring).
        warmup_steps: eps (and step size) grow linearly from 0 over this many steps.
        spatial: worst-of-k rotations/translations before the attack
            (:class:`~llrnet.train.tasks.spatial.WorstOfK`), or None.
        llr: an LLR regularizer added to the loss
            (:class:`~llrnet.train.tasks.llr_term.LLRTerm`), or None.
        logit_margin: the trained loss's margin in logit units, >= 0 (0: plain
            loss; see the module docstring).
        clean_weight: the clean image's share w of the trained loss, in [0, 1]
            (0: adversarial loss only, Madry et al.; see the module docstring).

    Returns ``{"loss", "adv_ce", "adv_accuracy", "eps"}`` (plus ``ce``,
    ``accuracy`` of the clean images with ``clean_weight > 0``; ``spatial_loss``,
    ``spatial_original`` with ``spatial``; ``llr_regularizer``, ``llr_gamma``
    with ``llr``). Cost: K + 1 forward-backward passes (the attack's backward
    passes skip weight gradients; one more with ``clean_weight > 0``), plus k
    forward-only passes with ``spatial`` and ``llr.steps + 2`` forward-backward
    ones with ``llr``.
    """

    eps: float = 8 / 255
    steps: int = 10
    step_size: float = 2 / 255
    random_start: bool = True
    loss: Literal["ce", "margin"] = "ce"
    attack_bn: AttackBN = "batch"
    warmup_steps: int = 0
    spatial: WorstOfK | None = None
    llr: LLRTerm | None = None
    logit_margin: float = 0.0
    clean_weight: float = 0.0

    def __post_init__(self) -> None:
        _check_common(self.eps, self.steps, self.step_size, self.attack_bn,
                      self.logit_margin)
        if not 0 <= self.clean_weight <= 1:
            raise UsageError(f"clean_weight must be in [0, 1], got {self.clean_weight}")

    def passes_per_step(self) -> StepPasses:
        """K + 1 forward-backward passes (+ 1 with ``clean_weight``, + the LLR term's);
        k forward-only ones with ``spatial``."""
        return StepPasses(self.steps + 1 + int(self.clean_weight > 0)
                          + _llr_passes(self.llr), _spatial_passes(self.spatial))

    def _clean_share(self, model: nn.Module, run: _Attacked
                     ) -> tuple[Tensor | None, dict[str, Tensor]]:
        """With ``clean_weight > 0``: the trained loss of ``model(run.original)`` (a
        training-mode pass) and its logged ``ce``, ``accuracy``; else ``(None, {})``."""
        if self.clean_weight == 0:
            return None, {}
        logits = model(run.original)
        ce = run.head.loss(logits, run.y)
        trained = _trained_loss(run.head, logits, run.y, ce, self.logit_margin)
        return trained, {"ce": ce.detach(), "accuracy": accuracy(logits, run.y, run.head)}

    def __call__(self, model: nn.Module, batch: tuple[Tensor, Tensor], step: int
                 ) -> dict[str, Tensor]:
        run = _begin(self, model, batch, step)
        x, y, eps, step_size, inner, head = (run.x, run.y, run.eps, run.step_size,
                                             run.inner, run.head)
        clean_loss, clean_logged = self._clean_share(model, run)
        attacked = head.attack_view(inner)
        with frozen_batch_norm(inner, mode=self.attack_bn):
            x_adv = pgd_perturb(attacked, x, y, eps=LinfBall(eps), steps=self.steps,
                                step_size=step_size, loss=self.loss,
                                random_start=self.random_start)
        logits = model(x_adv)
        adv_ce = head.loss(logits, y)
        loss = _trained_loss(head, logits, y, adv_ce, self.logit_margin)
        if clean_loss is not None:
            loss = (1 - self.clean_weight) * loss + self.clean_weight * clean_loss
        return _with_llr(self, run, step, {
            "loss": loss,
            **clean_logged,
            "adv_ce": adv_ce.detach(),
            "adv_accuracy": accuracy(logits, y, head),
            "eps": torch.tensor(eps, device=x.device),
            **run.logged,
        })


@dataclass(frozen=True)
class TRADESTask(RadiusWarmup):
    """TRADES (Zhang et al. 2019): ``CE(x) + beta * KL(p(x) || p(x_adv))``.

    ``x_adv`` maximizes the KL by L-inf PGD (sign steps, projection every step)
    from ``x + 0.001 * N(0, 1)`` (the official start); the KL is summed over
    classes and averaged over the batch, and gradients flow through both
    ``p(x)`` and ``p(x_adv)`` as in the official code. The loss and the class
    probabilities are the model's head's (:func:`llrnet.models.head_of`): for a
    sigmoid bird head, BCE on the bird logit and the KL of Bernoullis.

    Args:
        eps, steps, step_size: the attack (official CIFAR-10: 8/255, 10, 0.007 ~ 2/255).
        beta: weight of the KL term (6.0, the official CIFAR-10 value).
        attack_bn: batch-norm statistics during the attack, "batch" or "eval"
            (the official code uses eval mode; see the module docstring).
        warmup_steps: eps (and step size) grow linearly from 0 over this many steps.
        spatial: worst-of-k rotations/translations first (the "clean" image is
            then the worst transform), or None.
        llr: an LLR regularizer added to the loss, around the "clean" image
            (:class:`~llrnet.train.tasks.llr_term.LLRTerm`), or None.
        logit_margin: the margin of the clean loss (the CE term; the KL is
            unchanged), >= 0.

    Order of the passes: the clean training-mode forward first (updates the
    running averages; its detached probabilities are the attack's target),
    then the attack, then the training-mode forward of ``x_adv`` (updates them
    again, as in the official code). Cost: K + 2 forward-backward passes
    (+ ``llr.steps + 2`` with ``llr``).

    Returns ``{"loss", "ce", "kl", "accuracy", "eps"}`` (plus the spatial and
    LLR terms, as :class:`PGDTask`).
    """

    eps: float = 8 / 255
    steps: int = 10
    step_size: float = 2 / 255
    beta: float = 6.0
    attack_bn: AttackBN = "batch"
    warmup_steps: int = 0
    spatial: WorstOfK | None = None
    llr: LLRTerm | None = None
    logit_margin: float = 0.0

    def __post_init__(self) -> None:
        _check_common(self.eps, self.steps, self.step_size, self.attack_bn,
                      self.logit_margin)
        if not self.beta >= 0:
            raise UsageError(f"beta must be >= 0, got {self.beta}")

    def passes_per_step(self) -> StepPasses:
        """K + 2 forward-backward passes (+ the LLR term's); k forward-only ones with
        ``spatial``."""
        return StepPasses(self.steps + 2 + _llr_passes(self.llr),
                          _spatial_passes(self.spatial))

    def __call__(self, model: nn.Module, batch: tuple[Tensor, Tensor], step: int
                 ) -> dict[str, Tensor]:
        run = _begin(self, model, batch, step)
        x, y, eps, step_size, inner, head = (run.x, run.y, run.eps, run.step_size,
                                             run.inner, run.head)
        logits = model(x)
        log_p_clean = head.log_probs(logits)
        target = log_p_clean.detach()

        def kl_to_clean(adv_logits: Tensor, _labels: Tensor) -> Tensor:
            log_q = head.log_probs(adv_logits)
            return (target.exp() * (target - log_q)).sum(dim=1)

        x = x.detach()
        ball = LinfBall(eps)
        start = ball.project(0.001 * torch.randn_like(x), x)
        with frozen_batch_norm(inner, mode=self.attack_bn):
            x_adv = pgd_steps(inner, x, y, start, ball=ball, steps=self.steps,
                              step_size=step_size, objective=kl_to_clean)
        adv_logits = inner(x_adv)
        log_q = head.log_probs(adv_logits)
        kl = (log_p_clean.exp() * (log_p_clean - log_q)).sum(dim=1).mean()
        ce = head.loss(logits, y)
        loss = _trained_loss(head, logits, y, ce, self.logit_margin) + self.beta * kl
        return _with_llr(self, run, step, {
            "loss": loss,
            "ce": ce.detach(),
            "kl": kl.detach(),
            "accuracy": accuracy(logits, y, head),
            "eps": torch.tensor(eps, device=x.device),
            **run.logged,
        })
