"""Adversarial attacks on float NCHW images in [0, 1]: ``attack(model, x, y) -> x_adv``.
More: docs/attacks.md, "llrnet.attacks"."""

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
]
