"""Adversarial attacks on float NCHW images in [0, 1]: ``attack(model, x, y) -> x_adv``. Every
attack inherits the final ``__call__`` of :class:`Attack` (validation, eval mode, counting,
per-image random streams, the ball's clip) and implements only ``_run``.
More: docs/attacks.md, "llrnet.attacks"."""

from __future__ import annotations

from llrnet.attacks.autoattack import AutoAttack
from llrnet.attacks.balls import Ball, L2Ball, LinfBall
from llrnet.attacks.base import Attack, Identity
from llrnet.attacks.boundary import Boundary
from llrnet.attacks.bounds import white_box_bound
from llrnet.attacks.chain import Chain
from llrnet.attacks.corruptions import CommonCorruptions
from llrnet.attacks.pgd import PGD, MultiTargetedPGD
from llrnet.attacks.spatial import RandomSpatial, SpatialGrid
from llrnet.attacks.spsa import SPSA
from llrnet.attacks.validity import CheckedRandomSpatial, CheckedSpatialGrid

__all__ = [
    "PGD",
    "SPSA",
    "Attack",
    "AutoAttack",
    "Ball",
    "Boundary",
    "Chain",
    "CheckedRandomSpatial",
    "CheckedSpatialGrid",
    "CommonCorruptions",
    "Identity",
    "L2Ball",
    "LinfBall",
    "MultiTargetedPGD",
    "RandomSpatial",
    "SpatialGrid",
    "white_box_bound",
]
