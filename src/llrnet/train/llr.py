"""The Local Linearity Regularizer (Qin et al. 2019), as DeepMind's official code computes it.
More: docs/training.md, "llrnet.train.llr"."""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass

import torch
from torch import Tensor, nn

from llrnet.attacks.balls import LinfBall
from llrnet.attacks.parts import AdamState, adam_step, cross_entropy_per_example
from llrnet.core.errors import InputError, UsageError
from llrnet.train.bn_replay import BatchNormReplay
from llrnet.train.unwrap import unwrap_ddp

__all__ = [
    "LLROptions",
    "LLRTerms",
    "LossFn",
    "linear_warmup",
    "llr_regularizer",
    "maximize_deviation",
]

#: ``loss_fn(logits [N, K], labels [N]) -> per-example losses [N]``.
LossFn = Callable[[Tensor, Tensor], Tensor]


def linear_warmup(value: float, step: int, warmup_steps: int) -> float:
    """``value * min(1, step / warmup_steps)``: linear from 0 at step 0 to ``value``.

    ``step`` counts optimizer steps from 0 (the ``step`` argument of a task);
    ``warmup_steps <= 0`` means no warm-up. The official CIFAR-10 configuration
    warms eps up over 500 steps.
    """
    if warmup_steps <= 0:
        return float(value)
    return float(value) * min(1.0, max(int(step), 0) / warmup_steps)


@dataclass(frozen=True)
class LLROptions:
    """What defines the LLR regularizer of a batch; defaults: DeepMind's official CIFAR-10
    configuration.

    Attributes:
        eps: L-inf radius of the ball (8/255; pass a warmed-up value).
        steps: inner Adam steps (10).
        mu: weight of ``|d . G|`` in the regularizer (0.3, relative to lambda).
        lr, betas, adam_eps: the inner Adam (0.1, (0.9, 0.999), 1e-9).
        loss_fn: per-example loss ``(logits, y) -> [N]`` (cross-entropy).

    Example:
        >>> LLROptions(eps=4 / 255, steps=2).ball
        LinfBall(eps=0.01568627450980392)
    """

    eps: float = 8 / 255
    steps: int = 10
    mu: float = 0.3
    lr: float = 0.1
    betas: tuple[float, float] = (0.9, 0.999)
    adam_eps: float = 1e-9
    loss_fn: LossFn = cross_entropy_per_example

    def __post_init__(self) -> None:
        if not self.eps >= 0.0:
            raise UsageError(f"eps must be >= 0, got {self.eps}")
        if self.steps < 0:
            raise UsageError(f"steps must be >= 0, got {self.steps}")

    @property
    def ball(self) -> LinfBall:
        """The inner maximization's ball: its uniform start and its projection."""
        return LinfBall(self.eps)


@dataclass(frozen=True)
class LLRTerms:
    """What :func:`llr_regularizer` computed for one batch.

    Attributes:
        regularizer: scalar ``R = mean_i(deviation_i + mu * grad_term_i)``,
            differentiable in the parameters (through G: double backprop).
        deviation: [N] ``|l(x + d) - l(x) - d . G|`` at ``d = delta`` (gamma's estimate).
        grad_term: [N] ``|d . G|`` at ``d = delta``.
        delta: [N, C, H, W] the maximizer ``d_LLR`` (detached), in the eps-ball
            and with ``x + delta`` in [0, 1].
        clean_loss: [N] per-example loss at ``x``, attached (LLRTask uses it as
            the nominal loss: the nominal and clean passes share one forward).
        clean_logits: [N, K] logits of the clean pass, attached.
    """

    regularizer: Tensor
    deviation: Tensor
    grad_term: Tensor
    delta: Tensor
    clean_loss: Tensor
    clean_logits: Tensor


def _check_inputs(x: Tensor, y: Tensor) -> None:
    if x.dim() < 2 or not x.is_floating_point():
        raise InputError(f"x must be a float batch [N, ...], got {x.dtype} {tuple(x.shape)}")
    if y.shape != (x.shape[0],):
        raise InputError(f"y must have shape [{x.shape[0]}], got {tuple(y.shape)}")
    if x.shape[0] == 0:
        raise InputError("x is an empty batch; the regularizer of no images is undefined")
    if y.dtype != torch.int64:
        raise InputError(f"y must be int64 class labels, got {y.dtype}")
    if not bool(torch.isfinite(x).all()):
        raise InputError("x contains NaN or infinite values")


def _dot(a: Tensor, b: Tensor) -> Tensor:
    """Per-example dot product: [N, ...] x [N, ...] -> [N] (never an N x N matrix)."""
    return (a * b).flatten(1).sum(dim=1)


def maximize_deviation(
    model: nn.Module,
    x: Tensor,
    y: Tensor,
    clean_loss: Tensor,
    clean_grad: Tensor,
    options: LLROptions,
    *,
    generator: torch.Generator | None = None,
) -> Tensor:
    """LLR's inner loop: Adam ascent on ``mean_i |l(x_i + d_i) - l(x_i) - d_i . G_i|``.

    Runs the model as it is (call it inside ``BatchNormReplay.replay(detach=True)``
    to get the official batch-norm behaviour); gradients are taken wrt ``d``
    only. ``clean_loss`` [N] and ``clean_grad`` [N, ...] are used as constants.
    ``options`` gives eps, the steps, the Adam settings and the loss (``mu`` is
    not used here); ``generator`` draws the uniform start (None: torch's global one).

    Returns:
        ``d_LLR`` [N, C, H, W], detached, ``|d|_inf <= eps`` and ``x + d`` in [0, 1].
    """
    x = x.detach()
    clean_loss = clean_loss.detach()
    clean_grad = clean_grad.detach()
    ball = options.ball
    beta1, beta2 = options.betas
    # Uniform start in the ball, projected into [0, 1] (official: U(-eps, eps), then projected).
    delta = ball.random_start(x, generator)
    state = AdamState.zeros_like(delta)
    with torch.enable_grad():
        for _ in range(options.steps):
            delta.requires_grad_(True)
            perturbed = options.loss_fn(model(x + delta), y)
            # The linear term's d is a constant here, as in the official code.
            diff = perturbed - clean_loss - _dot(delta.detach(), clean_grad)
            (grad,) = torch.autograd.grad(diff.abs().mean(), delta)
            with torch.no_grad():
                # Ascent: the shared Adam step minimizes, so give it the negated gradient.
                delta = delta.detach()
                adam_step(delta, -grad, state, lr=options.lr, beta1=beta1, beta2=beta2,
                          eps=options.adam_eps)
                delta = ball.project(delta, x)
    return delta.detach()


def llr_regularizer(
    model: nn.Module,
    x: Tensor,
    y: Tensor,
    options: LLROptions | None = None,
    *,
    generator: torch.Generator | None = None,
    update_running_stats: bool = False,
) -> LLRTerms:
    """The LLR regularizer of one batch, differentiable in the model's parameters.

    Args:
        model: ``model(x) -> logits [N, K]``, usually in training mode.
        x: images [N, C, H, W] in [0, 1]. y: int64 labels [N].
        options: eps, inner steps and Adam, mu and the loss (:class:`LLROptions`;
            None: the official configuration, eps 8/255).
        generator: randomness of the uniform start (default: torch's global RNG).
        update_running_stats: whether the clean pass updates batch-norm running
            averages. Keep ``False`` when you run your own nominal pass; LLRTask
            shares the nominal and clean passes and passes ``True``.

    Returns:
        :class:`LLRTerms`; add ``lambda * terms.regularizer`` to your loss.
        The cost is about ``steps + 3`` forward-backward passes plus the
        double-backprop term.

    Example:
        >>> terms = llr_regularizer(model, x, y, LLROptions(eps=8 / 255, steps=10))
        >>> loss = 2.0 * ce + 4.0 * terms.regularizer  # doctest: +SKIP
    """
    options = LLROptions() if options is None else options
    _check_inputs(x, y)
    with torch.enable_grad():  # works inside torch.no_grad() too (e.g. to measure gamma)
        return _llr_terms(model, x, y, options, generator, update_running_stats)


def _llr_terms(
    model: nn.Module,
    x: Tensor,
    y: Tensor,
    options: LLROptions,
    generator: torch.Generator | None,
    update_running_stats: bool,
) -> LLRTerms:
    loss_fn = options.loss_fn
    replay = BatchNormReplay(model)
    x_clean = x.detach()
    x_var = x_clean.clone().requires_grad_(True)
    with replay.record(update_running_stats=update_running_stats):
        logits = model(x_var)
    clean_loss = loss_fn(logits, y)
    # create_graph: the regularizer back-propagates through G (double backprop).
    (clean_grad,) = torch.autograd.grad(clean_loss.sum(), x_var, create_graph=True)
    inner = unwrap_ddp(model)  # one wrapper forward per step (see unwrap_ddp)
    with replay.replay(detach=True):
        delta = maximize_deviation(inner, x_clean, y, clean_loss, clean_grad, options,
                                   generator=generator)
    with replay.replay(detach=False):
        perturbed = loss_fn(inner(x_clean + delta), y)
    linear = _dot(delta, clean_grad)
    deviation = (perturbed - clean_loss - linear).abs()
    grad_term = linear.abs()
    regularizer = (deviation + options.mu * grad_term).mean()
    return LLRTerms(
        regularizer=regularizer,
        deviation=deviation,
        grad_term=grad_term,
        delta=delta,
        clean_loss=clean_loss,
        clean_logits=logits,
    )
