"""Threat models as objects: the L-inf and L2 balls a perturbation must stay in. A ball owns
everything that depends on the norm (projection, random start, step, clip, distance), so no
attack dispatches on a norm name.
More: docs/attacks.md, "llrnet.attacks.balls"."""

from __future__ import annotations

from abc import ABC, abstractmethod
from dataclasses import dataclass
from typing import ClassVar

from torch import Tensor

from llrnet.attacks.parts import (
    GeneratorLike,
    project_l2,
    project_linf,
    random_init_l2,
    random_init_linf,
)
from llrnet.core.checks import check_positive
from llrnet.core.errors import UsageError

__all__ = ["BALLS", "Ball", "L2Ball", "LinfBall", "make_ball", "resolve_ball"]


@dataclass(frozen=True)
class Ball(ABC):
    """A norm ball of radius ``eps`` around each clean image, intersected with [0, 1].

    Subclasses implement :meth:`project`, :meth:`random_start`,
    :meth:`direction` and :meth:`distance`; :meth:`step` and :meth:`clip`
    follow from them.
    """

    eps: float
    #: The norm's name, as :func:`make_ball` takes it.
    norm: ClassVar[str]

    def __post_init__(self) -> None:
        object.__setattr__(self, "eps", check_positive(self.eps, "eps", allow_zero=True))

    @abstractmethod
    def project(self, delta: Tensor, x: Tensor) -> Tensor:
        """``delta`` projected into the ball, with ``x + delta`` clipped to [0, 1]."""

    @abstractmethod
    def random_start(self, x: Tensor, generator: GeneratorLike = None) -> Tensor:
        """A random perturbation, uniform in the ball, then projected into [0, 1].

        ``generator``: one ``torch.Generator``, one per image (row i from
        generator i: independent of batch-mates), or None (torch's global one).
        """

    @abstractmethod
    def direction(self, grad: Tensor) -> Tensor:
        """The steepest-ascent direction of unit norm for ``grad`` [N, ...], per image."""

    @abstractmethod
    def distance(self, x: Tensor, x_adv: Tensor) -> Tensor:
        """The per-image distance [N] the ball bounds, ``||x_adv - x||``."""

    def step(self, delta: Tensor, grad: Tensor, x: Tensor, step_size: float) -> Tensor:
        """One projected ascent step: ``project(delta + step_size * direction(grad))``."""
        return self.project(delta + step_size * self.direction(grad), x)

    def clip(self, x: Tensor, x_adv: Tensor) -> Tensor:
        """``x_adv`` moved into the ball around ``x`` and into [0, 1] (the final guard)."""
        return x + self.project(x_adv - x, x)

    def __call__(self, delta: Tensor, x: Tensor) -> Tensor:
        return self.project(delta, x)


@dataclass(frozen=True)
class LinfBall(Ball):
    """``|delta|_inf <= eps``: clip each pixel to [-eps, eps], step along ``sign(grad)``."""

    norm: ClassVar[str] = "linf"

    def project(self, delta: Tensor, x: Tensor) -> Tensor:
        return project_linf(delta, x, self.eps)

    def random_start(self, x: Tensor, generator: GeneratorLike = None) -> Tensor:
        return random_init_linf(x, self.eps, generator)

    def direction(self, grad: Tensor) -> Tensor:
        return grad.sign()

    def distance(self, x: Tensor, x_adv: Tensor) -> Tensor:
        return (x_adv - x).flatten(1).abs().amax(dim=1)


#: Relative slack of the L2 ball's final clip: a point exactly on the sphere is
#: not rescaled because of float noise in its norm.
L2_CLIP_SLACK = 1e-6


@dataclass(frozen=True)
class L2Ball(Ball):
    """``||delta||_2 <= eps`` per image: rescaled onto the sphere; steps along ``g / ||g||``."""

    norm: ClassVar[str] = "l2"

    def project(self, delta: Tensor, x: Tensor) -> Tensor:
        return project_l2(delta, x, self.eps)

    def random_start(self, x: Tensor, generator: GeneratorLike = None) -> Tensor:
        return random_init_l2(x, self.eps, generator)

    def direction(self, grad: Tensor) -> Tensor:
        gnorm = grad.flatten(1).norm(dim=1).clamp_min(1e-12)
        return grad / gnorm.reshape(-1, *([1] * (grad.dim() - 1)))

    def distance(self, x: Tensor, x_adv: Tensor) -> Tensor:
        return (x_adv - x).flatten(1).norm(dim=1)

    def clip(self, x: Tensor, x_adv: Tensor) -> Tensor:
        """As :meth:`Ball.clip`, with :data:`L2_CLIP_SLACK` relative slack on the radius."""
        return x + project_l2(x_adv - x, x, self.eps * (1 + L2_CLIP_SLACK))


#: The balls by norm name.
BALLS: dict[str, type[Ball]] = {"linf": LinfBall, "l2": L2Ball}


def make_ball(norm: str, eps: float) -> Ball:
    """The ball named ``norm`` ("linf" or "l2") of radius ``eps``."""
    if norm not in BALLS:
        raise UsageError(f"norm must be one of {list(BALLS)}, got {norm!r}")
    return BALLS[norm](eps)


def resolve_ball(eps: float | Ball, norm: str | None = None) -> Ball:
    """A ball from either a :class:`Ball`, or a radius and a norm name (default "linf").

    What attacks that accept both spellings call (``PGD(LinfBall(0.1), ...)`` and
    ``PGD(0.1, ..., norm="linf")``). A ball with a different ``norm`` is an error.
    """
    if isinstance(eps, Ball):
        if norm is not None and norm != eps.norm:
            raise UsageError(f"norm={norm!r} contradicts the ball {eps!r}; pass one of them")
        return eps
    return make_ball("linf" if norm is None else norm, eps)
