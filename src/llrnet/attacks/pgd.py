"""Projected gradient descent (Madry et al.) in any :class:`~llrnet.attacks.balls.Ball`,
and its multi-targeted form. More: docs/attacks.md, "llrnet.attacks.pgd"."""

from __future__ import annotations

from collections.abc import Callable

import torch
from torch import Tensor, nn

from llrnet.attacks.balls import Ball, resolve_ball
from llrnet.attacks.base import Attack, Pool
from llrnet.attacks.parts import ImageRng, cross_entropy_per_example, wrong_class_margin
from llrnet.core.checks import check_count, check_positive
from llrnet.core.errors import UsageError

#: A loss to MAXIMIZE: (logits [N, K], labels [N]) -> [N].
Objective = Callable[[Tensor, Tensor], Tensor]

LOSSES: dict[str, Objective] = {"ce": cross_entropy_per_example, "margin": wrong_class_margin}


def _objective(loss: str) -> Objective:
    if loss not in LOSSES:
        raise UsageError(f"loss must be one of {sorted(LOSSES)}, got {loss!r}")
    return LOSSES[loss]


def pgd_steps(
    model: nn.Module,
    x: Tensor,
    y: Tensor,
    delta: Tensor,
    *,
    ball: Ball,
    steps: int,
    step_size: float,
    objective: Objective,
) -> Tensor:
    """Run ``steps`` PGD ascent steps on ``objective`` from ``delta``; returns ``x + delta``.

    Each step is ``ball.step``: ``delta += step_size * ball.direction(grad)``
    (L-inf: ``sign(grad)``; L2: ``grad / ||grad||``), then the projection onto
    the ball and [0, 1]. Gradients are taken with respect to ``delta`` only.
    """
    delta = delta.detach()
    with torch.enable_grad():
        for _ in range(steps):
            delta.requires_grad_(True)
            value = objective(model(x + delta), y).sum()
            (grad,) = torch.autograd.grad(value, [delta])
            with torch.no_grad():
                delta = ball.step(delta, grad, x, step_size)
            delta = delta.detach()
    return (x + delta).detach()


def pgd_perturb(
    model: nn.Module,
    x: Tensor,
    y: Tensor,
    *,
    eps: float | Ball,
    steps: int,
    step_size: float,
    norm: str | None = None,
    loss: str = "ce",
    random_start: bool = True,
    generator: torch.Generator | None = None,
) -> Tensor:
    """PGD adversarial examples for training: ``x_adv`` [N, C, H, W] in [0, 1], detached.

    No mode switch (the caller decides train/eval mode), gradients with
    respect to the input only. ``eps`` is a :class:`~llrnet.attacks.balls.Ball`,
    or a radius with ``norm`` "linf" (default) or "l2". ``loss`` "ce"
    (cross-entropy) or "margin" (``max_{k != y} logit[k] - logit[y]``) is
    maximized. ``generator`` draws the random start (None: torch's global
    generator).

    Example::

        x_adv = pgd_perturb(model, x, y, eps=8/255, steps=10, step_size=2/255)
    """
    ball = resolve_ball(eps, norm)
    objective = _objective(loss)
    check_count(steps, "steps", minimum=0)
    check_positive(step_size, "step_size", allow_zero=True)
    x = x.detach()
    delta = ball.random_start(x, generator) if random_start else torch.zeros_like(x)
    return pgd_steps(
        model, x, y, delta, ball=ball, steps=steps, step_size=step_size, objective=objective,
    )


def _keep_worst(
    model: nn.Module, x_adv: Tensor, y: Tensor, best: Tensor | None, best_score: Tensor | None
) -> tuple[Tensor, Tensor]:
    """Keep per image the candidate with the largest wrong-class margin (strict >: first wins)."""
    with torch.no_grad():
        score = wrong_class_margin(model(x_adv), y)
    if best is None or best_score is None:
        return x_adv, score
    better = score > best_score
    best = torch.where(better.reshape(-1, 1, 1, 1), x_adv, best)
    return best, torch.where(better, score, best_score)


class PGD(Attack):
    """PGD with random start and restarts in a ball (L-inf or L2), cross-entropy or margin loss.

    Per image, the restart whose final point has the largest wrong-class
    margin ``max_{k != y} logit[k] - logit[y]`` is kept (ties: the first
    restart). Each restart costs ``steps`` forward+backward passes; selecting
    among restarts costs one extra forward per restart (only when restarts > 1).

    Args:
        eps: the ball (``LinfBall(8/255)``, ``L2Ball(1.0)``), or its radius
            (L-inf: per pixel, e.g. 8/255; L2: Euclidean) with ``norm``.
        steps: ascent steps per restart.
        step_size: L-inf: per-step change per pixel; L2: per-step L2 length.
        norm: with a radius, "linf" (default) or "l2"; with a ball, omit it.
        loss: "ce" or "margin".
        random_start: start uniformly in the ball (else at ``x``).
        restarts: independent runs per image.
    """

    name = "pgd"
    kind = "white_box"

    def __init__(
        self,
        eps: float | Ball,
        steps: int,
        step_size: float,
        *,
        norm: str | None = None,
        loss: str = "ce",
        random_start: bool = True,
        restarts: int = 1,
    ) -> None:
        super().__init__()
        self.ball: Ball = resolve_ball(eps, norm)
        self.steps = check_count(steps, "steps", minimum=0)
        self.step_size = check_positive(step_size, "step_size", allow_zero=True)
        self.loss = loss
        self._objective = _objective(loss)
        self.random_start = bool(random_start)
        self.restarts = check_count(restarts, "restarts")

    def budget(self) -> dict[str, int]:
        """``{"steps": steps, "restarts": restarts}``."""
        return {"steps": self.steps, "restarts": self.restarts}

    def _scaled(self, factor: int) -> PGD:
        """``steps * factor`` at the same ``step_size`` and restarts (1 forward+backward per
        step per restart): the walk can go ``factor`` times as far, and its first ``steps``
        steps are the original's (the random start is the same draw)."""
        return self._replace(steps=self.steps * factor)

    def _start(self, x: Tensor, rng: ImageRng) -> Tensor:
        if not self.random_start:
            return torch.zeros_like(x)
        return self.ball.random_start(x, rng.generators)

    def _run(
        self, model: nn.Module, x: Tensor, y: Tensor, rng: ImageRng, pool: Pool | None
    ) -> Tensor:
        best: Tensor | None = None
        best_score: Tensor | None = None
        for _ in range(self.restarts):
            x_adv = pgd_steps(
                model, x, y, self._start(x, rng), ball=self.ball, steps=self.steps,
                step_size=self.step_size, objective=self._objective,
            )
            if self.restarts == 1:
                return x_adv
            best, best_score = _keep_worst(model, x_adv, y, best, best_score)
        assert best is not None
        return best


class MultiTargetedPGD(PGD):
    """Multi-targeted PGD (Gowal et al. 2019): one run per target class, worst kept.

    For each image, the targets are its other classes ordered by the clean
    logits (largest first); ``num_targets`` limits how many are tried (None:
    all K - 1). Run j maximizes ``logit[t_j] - logit[y]`` with ``restarts``
    random starts; per image the point with the largest wrong-class margin
    over all runs is kept (ties: the earliest run). With K = 2 this is PGD on
    the margin loss.
    """

    name = "multi_targeted_pgd"
    kind = "white_box"

    def __init__(
        self,
        eps: float | Ball,
        steps: int,
        step_size: float,
        *,
        norm: str | None = None,
        num_targets: int | None = None,
        random_start: bool = True,
        restarts: int = 1,
    ) -> None:
        super().__init__(
            eps, steps, step_size, norm=norm, loss="margin", random_start=random_start,
            restarts=restarts,
        )
        if num_targets is not None:
            check_count(num_targets, "num_targets")
        self.num_targets = num_targets

    def _run(
        self, model: nn.Module, x: Tensor, y: Tensor, rng: ImageRng, pool: Pool | None
    ) -> Tensor:
        with torch.no_grad():
            clean = model(x)
        k = clean.shape[1]
        order = clean.scatter(1, y[:, None], float("-inf")).argsort(dim=1, descending=True)
        count = k - 1 if self.num_targets is None else min(self.num_targets, k - 1)
        best: Tensor | None = None
        best_score: Tensor | None = None
        for j in range(count):
            target = order[:, j]

            def objective(logits: Tensor, labels: Tensor, target: Tensor = target) -> Tensor:
                wrong = logits.gather(1, target[:, None])[:, 0]
                return wrong - logits.gather(1, labels[:, None])[:, 0]

            for _ in range(self.restarts):
                x_adv = pgd_steps(
                    model, x, y, self._start(x, rng), ball=self.ball, steps=self.steps,
                    step_size=self.step_size, objective=objective,
                )
                best, best_score = _keep_worst(model, x_adv, y, best, best_score)
        assert best is not None
        return best
