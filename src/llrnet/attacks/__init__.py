"""Adversarial attacks on float NCHW images in [0, 1]: ``attack(model, x, y) -> x_adv``.

Contract, kept exactly::

    attack = PGD(eps=8/255, steps=10, step_size=2/255)   # or PGD(LinfBall(8/255), 10, 2/255)
    x_adv = attack(model, x, y, seeds=0)       # seeds: int s -> image i uses s + i
    attack.last_stats["model_evaluations"]     # images forwarded, total

Every attack is an :class:`Attack` whose final ``__call__`` validates input,
switches the model to eval mode and restores its mode, counts model
evaluations, draws each image's randomness from its own seed (results do not
depend on batch-mates) and enforces the threat model (the attack's ball and
[0, 1]).

Attacks: :class:`Identity` ("clean"), :class:`SpatialGrid`,
:class:`CommonCorruptions`, :class:`RandomSpatial`, :class:`SPSA`,
:class:`Boundary`, :class:`PGD`, :class:`MultiTargetedPGD`, :class:`Chain`;
the functional :func:`pgd_perturb` for training; :func:`white_box_bound` (a
gradient attack in a black-box attack's ball). Threat models are balls,
:class:`LinfBall` and :class:`L2Ball` (:mod:`llrnet.attacks.balls`); the other
parts are in :mod:`llrnet.attacks.parts`.

Beyond the minimal contract:

* ``last_stats`` also holds ``"images"`` and ``"seconds"``; :class:`Chain`
  adds ``stage_stats`` (each stage's ``last_stats``).
* ``Attack.ball`` is the :class:`Ball` the base class clips to (``None`` for
  unbounded attacks such as the spatial grid), ``Attack.eps`` its radius;
  ``Attack.needs_pool`` says whether ``pool`` is required (Boundary, and
  Chains containing it).
* ``Attack.budget()`` names an attack's budget knobs and ``Attack.scaled(k)``
  returns a copy with about k times the budget (docs/attacks.md, "Budgets and
  how they scale"); :class:`Chain` keys its stages' knobs ``"<stage>.<knob>"``.
* ``Attack.bf16_search`` is the measured precision policy: whether the attack
  may search with a bf16 copy of the model (:func:`searches_in_bf16`; a Chain
  only if all its stages may).
* Image i's random stream is seeded ``llrnet.core.seeding.derive(seed_i, name)``
  with the attack's ``name``, so the stages of a Chain draw independently
  from the same seeds.
* :mod:`llrnet.attacks.parts` also provides :class:`~llrnet.attacks.parts.ImageRng`
  (per-image random streams), :class:`~llrnet.attacks.parts.AdamState`,
  ``draw_uniform``, ``random_init_l2`` and ``wrong_class_margin``.
* :func:`~llrnet.attacks.pgd.pgd_steps` is the PGD loop on a given start and
  objective (used by ``pgd_perturb``, :class:`PGD`, :class:`MultiTargetedPGD`).
* :func:`~llrnet.attacks.spatial.spatial_grid` returns the grids' transform
  tables; ``SpatialGrid.transform`` / ``RandomSpatial.transform`` and
  ``CommonCorruptions.corrupt`` expose the image operations themselves.
"""

from __future__ import annotations

from llrnet.attacks.autoattack import AutoAttack
from llrnet.attacks.balls import Ball, L2Ball, LinfBall
from llrnet.attacks.base import (
    ATTACK_KINDS,
    Attack,
    AttackKind,
    CountingModel,
    Identity,
    searches_in_bf16,
)
from llrnet.attacks.boundary import Boundary
from llrnet.attacks.bounds import white_box_bound
from llrnet.attacks.chain import Chain
from llrnet.attacks.corruptions import CHALLENGE_CORRUPTIONS, CommonCorruptions
from llrnet.attacks.pgd import PGD, MultiTargetedPGD, pgd_perturb
from llrnet.attacks.spatial import RandomSpatial, SpatialGrid, spatial_grid
from llrnet.attacks.spsa import SPSA
from llrnet.attacks.validity import CheckedRandomSpatial, CheckedSpatialGrid

__all__ = [
    "ATTACK_KINDS",
    "CHALLENGE_CORRUPTIONS",
    "PGD",
    "SPSA",
    "Attack",
    "AttackKind",
    "AutoAttack",
    "Ball",
    "Boundary",
    "Chain",
    "CheckedRandomSpatial",
    "CheckedSpatialGrid",
    "CommonCorruptions",
    "CountingModel",
    "Identity",
    "L2Ball",
    "LinfBall",
    "MultiTargetedPGD",
    "RandomSpatial",
    "SpatialGrid",
    "pgd_perturb",
    "searches_in_bf16",
    "spatial_grid",
    "white_box_bound",
]
