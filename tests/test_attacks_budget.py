"""Attack budgets: budget() names the knobs, scaled(k) multiplies them and changes nothing else."""

from __future__ import annotations

import inspect
from collections.abc import Callable
from typing import Any

import pytest
import torch
from torch import Tensor, nn

import llrnet.attacks as attacks
from attack_helpers import ScoreLinear
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
from llrnet.attacks.bounds import APGDCE
from llrnet.attacks.spatial import refine_granularity
from llrnet.core.errors import UsageError
from llrnet.eval.suites import describe_attack

pytestmark = pytest.mark.usefixtures("one_thread")

SIDE = 16


def oracle() -> ScoreLinear:
    """Weights +-1 on the central 8 x 8 pixels, 0 elsewhere; the bias centres the margins."""
    g = torch.Generator().manual_seed(3)
    w = torch.zeros(SIDE, SIDE)
    w[4:12, 4:12] = torch.randint(0, 2, (8, 8), generator=g) * 2.0 - 1.0
    return ScoreLinear(w, -0.5 * float(w.sum()))


def images(n: int, seed: int) -> Tensor:
    """``n`` seeded images [n, 1, 16, 16] with values in [0.3, 0.7]."""
    return 0.3 + 0.4 * torch.rand(n, 1, SIDE, SIDE, generator=torch.Generator().manual_seed(seed))


def labelled(model: nn.Module, n: int, seed: int) -> tuple[Tensor, Tensor]:
    x = images(n, seed)
    with torch.no_grad():
        return x, model(x).argmax(1)


# Each case: a budgeted attack, k, the scaled budget, and the attributes scaling may change.
BUDGETED: dict[str, tuple[Callable[[], Attack], int, dict[str, int], set[str]]] = {
    "pgd": (lambda: PGD(0.1, 5, 0.01, restarts=2), 3, {"steps": 15, "restarts": 2}, {"steps"}),
    "multi_targeted": (lambda: MultiTargetedPGD(0.1, 4, 0.01), 2, {"steps": 8, "restarts": 1},
                       {"steps"}),
    "spsa": (lambda: SPSA(0.1, 3, samples=8), 4, {"steps": 12, "samples": 8}, {"steps"}),
    "boundary": (lambda: Boundary(2.0, iterations=10, max_directions=4), 5,
                 {"iterations": 50, "max_directions": 4}, {"iterations"}),
    "grid": (lambda: SpatialGrid("intended", limits=(2.0, 2.0, 6.0), granularity=(3, 3, 3)), 4,
             {"granularity_dx": 5, "granularity_dy": 5, "granularity_angle": 5},
             {"granularity", "transforms"}),
    "challenge_grid": (lambda: SpatialGrid("challenge", limits=(6.0, 2.0, 2.0),
                                           granularity=(3, 3, 5)),
                       2, {"granularity_dx": 3, "granularity_dy": 5, "granularity_angle": 5},
                       {"granularity", "transforms"}),
    "checked_grid": (lambda: CheckedSpatialGrid(limits=(2.0, 2.0, 6.0), granularity=(3, 3, 3),
                                                border=2), 8,
                     {"granularity_dx": 7, "granularity_dy": 7, "granularity_angle": 5},
                     {"granularity", "transforms"}),
    "chain": (lambda: Chain(RandomSpatial(limits=(1.0, 1.0, 5.0), border=0),
                            SPSA(0.1, 3, samples=8)), 2,
              {"spsa.steps": 6, "spsa.samples": 8}, {"stages"}),
}

UNBUDGETED: dict[str, Callable[[], Attack]] = {
    "identity": Identity,
    "random_spatial": RandomSpatial,
    "checked_random_spatial": CheckedRandomSpatial,
    "corruptions": lambda: CommonCorruptions(("contrast",), workers=0),
    "custom_grid": lambda: SpatialGrid([[0.0, 0.0, 0.0], [1.0, 0.0, 5.0]]),
    "autoattack": lambda: AutoAttack(0.1),
    "apgd_ce": lambda: APGDCE(0.1),
    "chain_without_budget": lambda: Chain(RandomSpatial(), Identity()),
}


def test_every_attack_class_is_covered() -> None:
    exported = {value for value in vars(attacks).values()
                if inspect.isclass(value) and issubclass(value, Attack) and value is not Attack}
    covered = {type(make()) for make, *_ in BUDGETED.values()}
    covered |= {type(make()) for make in UNBUDGETED.values()}
    assert exported <= covered


def _without(record: dict[str, Any], keys: set[str]) -> dict[str, Any]:
    return {k: v for k, v in record.items() if k not in keys}


@pytest.mark.parametrize("case", sorted(BUDGETED))
def test_scaled_multiplies_the_knobs_and_keeps_everything_else(case: str) -> None:
    make, factor, expected, changed = BUDGETED[case]
    attack = make()
    before = describe_attack(attack)
    budget = attack.budget()
    scaled = attack.scaled(factor)
    assert type(scaled) is type(attack) and scaled is not attack
    assert scaled.name == attack.name and scaled.ball == attack.ball
    assert scaled.kind == attack.kind and scaled.needs_pool == attack.needs_pool
    assert scaled.budget() == expected != budget
    assert _without(describe_attack(scaled), changed) == _without(before, changed)
    # Not mutated.
    assert describe_attack(attack) == before and attack.budget() == budget
    # scaled(1) is the same configuration.
    assert describe_attack(attack.scaled(1)) == before


def test_pgd_spsa_boundary_multiply_their_iteration_knob() -> None:
    for attack, knob in ((PGD(0.1, 7, 0.01), "steps"), (SPSA(0.1, 7, samples=4), "steps"),
                         (Boundary(1.0, iterations=7), "iterations")):
        for k in (1, 2, 9):
            scaled = attack.scaled(k)
            assert getattr(scaled, knob) == 7 * k
            assert scaled.budget() == {**attack.budget(), knob: 7 * k}
    pgd = PGD(0.1, 7, 0.01).scaled(3)
    assert isinstance(pgd, PGD) and pgd.step_size == 0.01 and pgd.restarts == 1


def test_grids_hold_about_k_times_the_transforms_and_every_original_one() -> None:
    for grid in (SpatialGrid("intended", limits=(10.0, 10.0, 10.0), granularity=(5, 5, 11)),
                 SpatialGrid(), CheckedSpatialGrid()):
        count = grid.transforms.shape[0]
        original = {tuple(row) for row in grid.transforms.tolist()}
        for k, low, high in ((2, 1.5, 2.0), (4, 3.0, 5.0), (8, 6.0, 10.0)):
            table = grid.scaled(k).transforms
            assert low <= table.shape[0] / count <= high
            assert original <= {tuple(row) for row in table.tolist()}
    assert refine_granularity((5, 5, 11), 1) == (5, 5, 11)
    assert refine_granularity((5, 5, 11), 4) == (9, 9, 11)  # 891 of 275
    assert refine_granularity((5, 5, 11), 8) == (13, 9, 21)  # 2,457
    assert refine_granularity((1, 5, 1), 4) == (1, 21, 1)  # a single value stays single


def _run(attack: Attack, model: nn.Module, x: Tensor, y: Tensor, seeds: Any) -> Tensor:
    pool = None
    if attack.needs_pool:
        px, py = labelled(model, 16, 99)
        pool = (px, py)
    return attack(model, x, y, seeds=seeds, pool=pool)


@pytest.mark.parametrize("case", sorted(BUDGETED))
def test_scaled_one_gives_identical_results(case: str) -> None:
    model = oracle()
    x, y = labelled(model, 4, 0)
    attack = BUDGETED[case][0]()
    torch.testing.assert_close(_run(attack.scaled(1), model, x, y, 5),
                               _run(attack, model, x, y, 5), rtol=0, atol=0)


@pytest.mark.parametrize("case", ["pgd", "spsa", "boundary", "grid", "chain"])
def test_scaled_is_deterministic_and_batch_independent(case: str) -> None:
    model = oracle()
    x, y = labelled(model, 4, 1)
    seeds = torch.tensor([7, 3, 11, 2])
    scaled = BUDGETED[case][0]().scaled(2)
    full = _run(scaled, model, x, y, seeds)
    torch.testing.assert_close(_run(scaled, model, x, y, seeds), full, rtol=0, atol=0)
    torch.testing.assert_close(_run(scaled, model, x[2:3], y[2:3], seeds[2:3]), full[2:3],
                               rtol=0, atol=1e-6)


def test_chain_keeps_the_unbudgeted_stage_and_its_random_stream() -> None:
    model = oracle()
    x, y = labelled(model, 5, 2)
    spatial = RandomSpatial(limits=(3.0, 3.0, 10.0), border=2)
    chain = Chain(spatial, SPSA(0.05, 2, samples=4))
    scaled = chain.scaled(3)
    assert scaled.name == chain.name == "spsa_with_random_spatial"
    assert scaled.stages[0] is spatial and scaled.stages[1] is not chain.stages[1]
    assert [s.name for s in scaled.stages] == [s.name for s in chain.stages]
    # The transformed image is the same: the scaled chain's result lies in the eps ball
    # around the original chain's first stage output (the motion itself is far larger).
    first = spatial(model, x, y, seeds=4)
    out = scaled(model, x, y, seeds=4)
    assert float((out - first).abs().max()) <= 0.05 + 1e-6
    assert float((out - x).abs().max()) > 0.1
    torch.testing.assert_close(scaled.stages[0](model, x, y, seeds=4), first, rtol=0, atol=0)
    assert chain.stages[1].budget() == {"steps": 2, "samples": 4}  # not mutated


@pytest.mark.parametrize("case", sorted(UNBUDGETED))
def test_unbudgeted_attacks_refuse_to_scale(case: str) -> None:
    attack = UNBUDGETED[case]()
    assert attack.budget() == {}
    with pytest.raises(UsageError, match=attack.name):
        attack.scaled(2)


@pytest.mark.parametrize("factor", [0, -1, 1.5, True, "2"])
def test_factor_must_be_an_int_at_least_one(factor: Any) -> None:
    with pytest.raises(UsageError, match="factor"):
        PGD(0.1, 5, 0.01).scaled(factor)


def _margin(model: nn.Module, x: Tensor) -> Tensor:
    """The oracle's score ``w.x + b`` (logit 1 minus logit 0)."""
    with torch.no_grad():
        logits = model(x)
    return logits[:, 1] - logits[:, 0]


def test_scaled_pgd_reaches_a_boundary_the_original_cannot() -> None:
    # Every sign step moves the score by step * ||w||_1 (no clipping: eps 0.2 from [0.3, 0.7]),
    # so 4 steps of 0.001 cross distances below 0.004 and 16 steps those below 0.016.
    model = oracle()
    x, y = labelled(model, 64, 3)
    distance = _margin(model, x).abs() / model.w.abs().sum()
    far = (distance > 0.005) & (distance < 0.015)
    assert int(far.sum()) >= 3
    attack = PGD(0.2, 4, 0.001, loss="margin", random_start=False)
    with torch.no_grad():
        before = model(attack(model, x, y, seeds=0)).argmax(1) != y
        after = model(attack.scaled(4)(model, x, y, seeds=0)).argmax(1) != y
    assert not before[far].any() and after[far].all()
    assert (after | ~before).all()  # nothing the original fooled is lost


def test_scaled_spsa_and_boundary_are_stronger_where_budget_is_short() -> None:
    model = oracle()
    x, y = labelled(model, 24, 4)
    spsa = SPSA(0.2, 2, samples=32, lr=0.01)
    with torch.no_grad():
        fooled = model(spsa(model, x, y, seeds=0)).argmax(1) != y
        fooled_scaled = model(spsa.scaled(10)(model, x, y, seeds=0)).argmax(1) != y
    assert int(fooled_scaled.sum()) > int(fooled.sum())
    boundary = Boundary(1.0, iterations=5, max_directions=5)
    pool = labelled(model, 16, 99)
    out = boundary(model, x, y, seeds=0, pool=pool)
    out_scaled = boundary.scaled(40)(model, x, y, seeds=0, pool=pool)
    with torch.no_grad():
        fooled = model(out).argmax(1) != y
        fooled_scaled = model(out_scaled).argmax(1) != y
    assert int(fooled_scaled.sum()) > int(fooled.sum())


def test_scaled_grid_finds_a_margin_at_least_as_large() -> None:
    model = oracle()
    x, y = labelled(model, 6, 5)
    grid = SpatialGrid("intended", limits=(2.0, 2.0, 8.0), granularity=(3, 3, 3))

    def wrong(out: Tensor) -> Tensor:
        score = _margin(model, out)
        return torch.where(y == 1, -score, score)

    base = wrong(grid(model, x, y, seeds=0))
    finer = wrong(grid.scaled(4)(model, x, y, seeds=0))
    assert (finer >= base - 1e-5).all() and (finer > base + 1e-4).any()
