"""Adversarial attacks on float NCHW images in [0, 1]: ``attack(model, x, y) -> x_adv``.

Contract (``/work/briefs/contracts.md``), kept exactly::

    attack = PGD(eps=8/255, steps=10, step_size=2/255)
    x_adv = attack(model, x, y, seeds=0)       # seeds: int s -> image i uses s + i
    attack.last_stats["model_evaluations"]     # images forwarded, total

Every attack is an :class:`Attack` whose final ``__call__`` validates input,
switches the model to eval mode and restores its mode, counts model
evaluations, draws each image's randomness from its own seed (results do not
depend on batch-mates) and enforces the threat model (the attack's ball and
[0, 1]).

Compatible extensions of the contract (documented here as the brief asks):

* ``last_stats`` also holds ``"images"`` and ``"seconds"``.
* ``Attack.norm`` / ``Attack.eps`` name the ball the base class clips to
  (``None`` for unbounded attacks such as the spatial grid).
* :mod:`llrnet.attacks.parts` also provides :class:`~llrnet.attacks.parts.ImageRng`
  (per-image random streams), :class:`~llrnet.attacks.parts.AdamState`,
  ``draw_uniform``, ``random_init_l2`` and ``wrong_class_margin``.
* :func:`~llrnet.attacks.pgd.pgd_steps` is the PGD loop on a given start and
  objective (used by ``pgd_perturb``, :class:`PGD`, :class:`MultiTargetedPGD`).
"""

from __future__ import annotations

from llrnet.attacks.base import Attack, CountingModel, Identity
from llrnet.attacks.pgd import PGD, MultiTargetedPGD, pgd_perturb

__all__ = [
    "PGD",
    "Attack",
    "CountingModel",
    "Identity",
    "MultiTargetedPGD",
    "pgd_perturb",
]
