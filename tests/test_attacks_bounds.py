"""White-box bounds: a gradient attack in a black-box attack's ball, on a linear oracle.

For the two-class score ``w.x + b`` the least L-inf perturbation that flips the
class has size ``|w.x + b| / ||w||_1`` and the least L2 one ``|w.x + b| / ||w||_2``
(when the [0, 1] box does not cut them off, which the tests check). A bound in
the same ball must flip exactly the images closer than the radius.
"""

from __future__ import annotations

import pytest
import torch
from torch import Tensor

from attack_helpers import ScoreLinear
from llrnet.attacks import (
    PGD,
    SPSA,
    Boundary,
    Chain,
    CheckedRandomSpatial,
    Identity,
    L2Ball,
    LinfBall,
    RandomSpatial,
    SpatialGrid,
    white_box_bound,
)
from llrnet.core.errors import UsageError

pytestmark = pytest.mark.usefixtures("one_thread")

SIDE = 16
BAND = 0.15
"""Images whose distance is within 15% of the radius are left out of the exact check."""


def oracle() -> ScoreLinear:
    """Weights of magnitude 0.5-1.5 and random sign on the central 8 x 8 pixels, 0 elsewhere."""
    g = torch.Generator().manual_seed(5)
    w = torch.zeros(SIDE, SIDE)
    sign = torch.randint(0, 2, (8, 8), generator=g) * 2.0 - 1.0
    w[4:12, 4:12] = sign * (0.5 + torch.rand(8, 8, generator=g))
    return ScoreLinear(w, -0.5 * float(w.sum()))


def images(n: int, seed: int) -> Tensor:
    """``n`` seeded images [n, 1, 16, 16], values in [0.35, 0.65]."""
    return 0.35 + 0.3 * torch.rand(n, 1, SIDE, SIDE, generator=torch.Generator().manual_seed(seed))


def score(model: ScoreLinear, x: Tensor) -> Tensor:
    with torch.no_grad():
        logits = model(x)
    return logits[:, 1] - logits[:, 0]


def distances(model: ScoreLinear, x: Tensor, norm: str) -> Tensor:
    """The least ``norm`` distance from each image to the decision boundary, box ignored."""
    w = model.w.detach()[0]
    dual = w.abs().sum() if norm == "linf" else w.norm()
    return score(model, x).abs() / dual


def assert_box_does_not_cut(model: ScoreLinear, x: Tensor, eps: float, norm: str) -> None:
    """The least flipping perturbation of size 1.2 eps stays in [0, 1] for every image."""
    w = model.w.detach()[0].reshape(x.shape[1:])
    direction = w.sign() if norm == "linf" else w / w.norm()
    sign = -score(model, x).sign().reshape(-1, 1, 1, 1)
    moved = x + 1.2 * eps * sign * direction
    assert moved.min() >= 0 and moved.max() <= 1


def check_exact(model: ScoreLinear, x: Tensor, y: Tensor, out: Tensor, reference: Tensor,
                eps: float, norm: str) -> None:
    """``out`` (the bound's result for ``reference`` = the images it searched around) flips
    exactly the images whose distance is below eps, outside the band around eps (a
    reference image the model already misclassifies is at distance 0)."""
    already = score(model, reference).gt(0).long() != y
    d = torch.where(already, 0.0, distances(model, reference, norm))
    clear = ((d - eps).abs() > BAND * eps) & (score(model, reference) != 0)
    flipped = score(model, out).gt(0).long() != y
    assert int((clear & (d < eps)).sum()) >= 5 and int((clear & (d > eps)).sum()) >= 5
    torch.testing.assert_close(flipped[clear], (d < eps)[clear], rtol=0, atol=0)
    size = (out - reference).flatten(1)
    size = size.abs().max(dim=1).values if norm == "linf" else size.norm(dim=1)
    assert (size <= eps * (1 + 1e-5)).all()


def setup(n: int = 96, seed: int = 0) -> tuple[ScoreLinear, Tensor, Tensor]:
    model = oracle()
    x = images(n, seed)
    return model, x, score(model, x).gt(0).long()


def test_spsa_is_bounded_by_linf_pgd_in_its_ball() -> None:
    model, x, y = setup()
    eps = float(distances(model, x, "linf").median())
    assert_box_does_not_cut(model, x, eps, "linf")
    bound = white_box_bound(SPSA(eps=eps, steps=5, samples=4))
    assert isinstance(bound, PGD) and bound.ball == LinfBall(eps) and bound.kind == "white_box"
    assert bound.loss == "margin" and bound.random_start and bound.steps == 100
    check_exact(model, x, y, bound(model, x, y, seeds=0), x, eps, "linf")


def test_boundary_is_bounded_by_l2_pgd_at_its_threshold() -> None:
    model, x, y = setup(seed=1)
    eps = float(distances(model, x, "l2").median())
    assert_box_does_not_cut(model, x, eps, "l2")
    bound = white_box_bound(Boundary(threshold=eps, iterations=10))
    assert isinstance(bound, PGD) and bound.ball == L2Ball(eps) and not bound.needs_pool
    check_exact(model, x, y, bound(model, x, y, seeds=0), x, eps, "l2")


@pytest.mark.parametrize("norm", ["linf", "l2"])
def test_chain_bound_keeps_the_random_transform(norm: str) -> None:
    model, x, y = setup(seed=2)
    spatial = RandomSpatial(limits=(1.0, 1.0, 5.0), border=0)
    moved = spatial(model, x, y, seeds=10)  # what the chain's first stage does, same seeds
    assert (moved - x).abs().max() > 0.01  # a real motion, yet the weighted pixels stay inside
    eps = float(distances(model, moved, norm).median())
    assert_box_does_not_cut(model, moved, eps, norm)
    last = SPSA(eps=eps, steps=3, samples=4) if norm == "linf" else Boundary(eps, iterations=5)
    chain = Chain(spatial, last)
    bound = white_box_bound(chain, restarts=2)
    assert isinstance(bound, Chain) and bound.name == chain.name
    assert bound.stages[0] is spatial and isinstance(bound.stages[1], PGD)
    assert bound.stages[1].restarts == 2 and bound.stages[1].ball == last.ball
    assert bound.kind == "white_box" and not bound.needs_pool
    out = bound(model, x, y, seeds=10)
    check_exact(model, x, y, out, moved, eps, norm)
    # Batch-independent, like the black-box chain.
    torch.testing.assert_close(bound(model, x[5:7], y[5:7], seeds=15), out[5:7], rtol=0,
                               atol=1e-6)


def test_checked_random_stage_is_kept_too() -> None:
    chain = Chain(CheckedRandomSpatial(), SPSA(eps=0.3, steps=2, samples=4))
    bound = white_box_bound(chain, steps=10)
    assert isinstance(bound, Chain) and bound.stages[0] is chain.stages[0]
    assert isinstance(bound.stages[1], PGD) and bound.stages[1].steps == 10
    assert bound.stages[1].step_size == pytest.approx(2.5 * 0.3 / 10)


def test_no_bound_where_none_is_defined() -> None:
    assert white_box_bound(PGD(0.1, 5, 0.01)) is None
    assert white_box_bound(Identity()) is None
    assert white_box_bound(SpatialGrid()) is None
    assert white_box_bound(RandomSpatial()) is None
    assert white_box_bound(Chain(RandomSpatial(), Identity())) is None


@pytest.mark.parametrize("bad", [0, -3, 2.0, True])
def test_steps_and_restarts_are_checked(bad: object) -> None:
    with pytest.raises(UsageError, match="steps"):
        white_box_bound(SPSA(), steps=bad)  # type: ignore[arg-type]
    with pytest.raises(UsageError, match="restarts"):
        white_box_bound(SPSA(), restarts=bad)  # type: ignore[arg-type]


def test_apgd_bounds_spsa_exactly() -> None:
    pytest.importorskip("pyautoattack", reason="needs the extra llrnet[autoattack]")
    from llrnet.attacks.bounds import APGDCE

    model, x, y = setup(seed=3)
    eps = float(distances(model, x, "linf").median())
    assert_box_does_not_cut(model, x, eps, "linf")
    bound = white_box_bound(Chain(Identity(), SPSA(eps=eps)), apgd=True)
    assert isinstance(bound, Chain) and isinstance(bound.stages[1], APGDCE)
    assert bound.stages[1].ball == LinfBall(eps)
    check_exact(model, x, y, bound(model, x, y, seeds=0), x, eps, "linf")
    # Boundary's L2 ball keeps L2 PGD.
    assert isinstance(white_box_bound(Boundary(2.0), apgd=True), PGD)
