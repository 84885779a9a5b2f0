"""Every attack declares its kind and whether it needs a pool; a Chain follows its stages."""

from __future__ import annotations

import inspect

import pytest
from torch import Tensor, nn

import llrnet.attacks as attacks
from llrnet.attacks import (
    PGD,
    SPSA,
    Attack,
    AutoAttack,
    Boundary,
    Chain,
    CheckedRandomSpatial,
    CheckedSpatialGrid,
    CommonCorruptions,
    Identity,
    MultiTargetedPGD,
    RandomSpatial,
    SpatialGrid,
)
from llrnet.attacks.base import ATTACK_KINDS, UNDECLARED_KIND, Pool
from llrnet.attacks.parts import ImageRng

EXPECTED = {
    Identity: "clean",
    SpatialGrid: "spatial",
    RandomSpatial: "spatial",
    CommonCorruptions: "corruption",
    SPSA: "black_box",
    Boundary: "black_box",
    PGD: "white_box",
    MultiTargetedPGD: "white_box",
    AutoAttack: "white_box",
    CheckedSpatialGrid: "spatial",
    CheckedRandomSpatial: "spatial",
}

EXPORTED = [
    obj for obj in vars(attacks).values()
    if inspect.isclass(obj) and issubclass(obj, Attack) and obj not in (Attack, Chain)
]


def test_the_table_covers_every_exported_attack() -> None:
    assert set(EXPORTED) == set(EXPECTED)
    assert ATTACK_KINDS == ("clean", "spatial", "corruption", "black_box", "white_box")


@pytest.mark.parametrize("cls", EXPORTED, ids=lambda cls: cls.__name__)
def test_every_attack_class_declares_a_valid_kind(cls: type[Attack]) -> None:
    declared = cls.kind  # a class attribute, readable without building the attack
    assert isinstance(declared, str) and declared in ATTACK_KINDS
    assert declared == EXPECTED[cls]
    assert cls.needs_pool is (cls is Boundary)


def test_chain_kind_and_pool_follow_its_stages() -> None:
    spsa = Chain(RandomSpatial(), SPSA(steps=1))
    assert spsa.kind == "black_box" and not spsa.needs_pool
    boundary = Chain(RandomSpatial(), Boundary())
    assert boundary.kind == "black_box" and boundary.needs_pool
    # The kind is the last stage's; any stage's need for a pool counts.
    reversed_chain = Chain(Boundary(), RandomSpatial())
    assert reversed_chain.kind == "spatial" and reversed_chain.needs_pool
    assert Chain(Identity()).kind == "clean"
    assert Chain(spsa, PGD(0.1, 1, 0.1)).kind == "white_box"


def test_a_subclass_that_declares_no_kind_is_white_box() -> None:
    class Mine(Attack):
        def _run(self, model: nn.Module, x: Tensor, y: Tensor, rng: ImageRng,
                 pool: Pool | None) -> Tensor:
            return x

    assert Mine().kind == UNDECLARED_KIND == "white_box"
    assert Chain(Identity(), Mine()).kind == "white_box"
