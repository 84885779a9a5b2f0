"""White-box bounds: a gradient attack in the same threat model as a black-box attack.

A black-box column's accuracy claims that no point of its ball fools the
model; any attack in the same ball that finds one bounds that claim from
above. :func:`white_box_bound` maps SPSA (L-inf ``eps``) to L-inf PGD and
Boundary (L2 ``threshold``) to L2 PGD at the same radius, and a
:class:`~llrnet.attacks.chain.Chain` to the same chain with its last stage
bounded (docs/attacks.md, "White-box bounds").
"""

from __future__ import annotations

import torch
from torch import Tensor, nn

from llrnet.attacks.autoattack import AutoAttack, _captured_checks, flag_kind, load_pyautoattack
from llrnet.attacks.balls import Ball, L2Ball, LinfBall
from llrnet.attacks.base import Attack, Pool
from llrnet.attacks.boundary import Boundary
from llrnet.attacks.chain import Chain
from llrnet.attacks.parts import ImageRng
from llrnet.attacks.pgd import PGD
from llrnet.attacks.spsa import SPSA
from llrnet.core.checks import check_count
from llrnet.core.seeding import derive

STEP_FACTOR = 2.5
"""PGD's step size is ``STEP_FACTOR * eps / steps`` (Madry et al.): ``steps`` steps can
cross the ball 2.5 times, so a random start anywhere in it can reach any point."""

BOUND_LOSS = "margin"
"""The bounds' PGD loss, ``max_{k != y} logit[k] - logit[y]``. With two classes the
cross-entropy is ``softplus`` of that margin: in exact arithmetic the same sign (L-inf)
and normalized (L2) steps. In float32, past a margin of about 16 the true logit's
gradient rounds to 0 (the step follows the wrong logit alone), past about 104 both do
(the step is zero); the margin's gradient has neither problem."""


class APGDCE(AutoAttack):
    """The authors' APGD-CE alone (``pyautoattack``), in an L-inf or L2 ball.

    As :class:`~llrnet.attacks.autoattack.AutoAttack` (its seed and batch
    semantics: the result depends on batch-mates), running only ``apgd-ce``
    with the authors' defaults (100 iterations, one restart).
    """

    def __init__(self, eps: float | Ball, *, norm: str | None = None) -> None:
        super().__init__(eps, version="standard", norm=norm)
        self.name = "apgd_ce"

    def _run(self, model: nn.Module, x: Tensor, y: Tensor, rng: ImageRng, pool: Pool | None
             ) -> Tensor:
        package = load_pyautoattack()
        seed = derive(len(rng.seeds), *rng.seeds, "autoattack")
        devices = [x.device.index or 0] if x.device.type == "cuda" else []
        norm = "Linf" if isinstance(self.ball, LinfBall) else "L2"
        with _captured_checks() as messages, torch.random.fork_rng(devices=devices):
            adversary = package.AutoAttack(model, device=x.device, eps=float(self.ball.eps),
                                           norm=norm, seed=seed, version="standard")
            adversary.verbose = False
            adversary.attacks_to_run = ["apgd-ce"]
            x_adv, _ = adversary.run_standard_evaluation(x, y, batch_size=len(x))
        for message in messages:
            self._flags.setdefault(flag_kind(message), message)
        return torch.as_tensor(x_adv).to(x.device, x.dtype)


def _pgd(ball: Ball, steps: int, restarts: int) -> PGD:
    return PGD(ball, steps, STEP_FACTOR * ball.eps / steps, loss=BOUND_LOSS,
               random_start=True, restarts=restarts)


def white_box_bound(attack: Attack, *, steps: int = 100, restarts: int = 1,
                    apgd: bool = False) -> Attack | None:
    """A white-box attack in ``attack``'s threat model, or None if none is defined.

    * :class:`~llrnet.attacks.spsa.SPSA` (L-inf ``eps``) -> :class:`~llrnet.attacks.pgd.PGD`
      in ``LinfBall(eps)``; with ``apgd=True`` the authors' APGD-CE instead
      (:class:`APGDCE`, needs ``pyautoattack``).
    * :class:`~llrnet.attacks.boundary.Boundary` (success: L2 distance <=
      ``threshold``, the radius of its ``ball``) -> PGD in ``L2Ball(threshold)``.
    * :class:`~llrnet.attacks.chain.Chain` -> the same earlier stages (the
      same objects: under the same seeds each image gets the same random
      transform) and the bound of the last stage, with the chain's ``name``;
      None if the last stage has none.
    * Anything else (white-box, spatial, corruptions, clean) -> None.

    PGD: ``steps`` steps of ``2.5 eps / steps`` (:data:`STEP_FACTOR`) on the
    margin loss (:data:`BOUND_LOSS`) from a uniform random start,
    ``restarts`` starts per image (the worst kept). Both stay inside the ball
    and [0, 1], as the black-box attack does.

    Raises:
        UsageError: ``steps`` or ``restarts`` not an int >= 1, or ``apgd=True``
            without ``pyautoattack``.
    """
    check_count(steps, "steps")
    check_count(restarts, "restarts")
    if apgd:
        load_pyautoattack()
    if isinstance(attack, Chain):
        last = white_box_bound(attack.stages[-1], steps=steps, restarts=restarts, apgd=apgd)
        return None if last is None else attack.with_stages(*attack.stages[:-1], last)
    if isinstance(attack, SPSA):
        ball = LinfBall(attack.ball.eps)
        return APGDCE(ball) if apgd else _pgd(ball, steps, restarts)
    if isinstance(attack, Boundary):
        return _pgd(L2Ball(attack.ball.eps), steps, restarts)
    return None
