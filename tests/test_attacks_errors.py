"""Error paths of llrnet.attacks: bad inputs and bad configuration fail with clear messages."""

from __future__ import annotations

import pytest
import torch
from torch import nn

from llrnet.attacks import PGD, Identity, MultiTargetedPGD
from llrnet.attacks.pgd import pgd_perturb
from llrnet.core.errors import InputError, UsageError


def model() -> nn.Module:
    return nn.Sequential(nn.Flatten(), nn.Linear(16, 2))


X = torch.rand(2, 1, 4, 4)
Y = torch.tensor([0, 1])


@pytest.mark.parametrize(
    "x,match",
    [
        (X.numpy(), "must be a torch.Tensor"),
        ((X * 255).to(torch.uint8), "must be a float tensor"),
        (X[0], r"must be \[N, C, H, W\]"),
        (X * 2, r"must lie in \[0, 1\]"),
        (X.clone().fill_(float("nan")), "NaN"),
    ],
)
def test_bad_images(x: object, match: str) -> None:
    with pytest.raises(InputError, match=match):
        Identity()(model(), x, Y)  # type: ignore[arg-type]


@pytest.mark.parametrize(
    "y,match",
    [
        (Y.to(torch.int32), "int64"),
        (torch.tensor([0, 1, 1]), r"shape \[2\]"),
        (torch.tensor([0, -1]), "non-negative"),
    ],
)
def test_bad_labels(y: torch.Tensor, match: str) -> None:
    with pytest.raises(InputError, match=match):
        Identity()(model(), X, y)


def test_bad_seeds() -> None:
    with pytest.raises(InputError, match=r"seeds must have shape \[2\]"):
        Identity()(model(), X, Y, seeds=torch.tensor([1, 2, 3]))
    with pytest.raises(InputError, match="integer tensor"):
        Identity()(model(), X, Y, seeds=torch.tensor([1.0, 2.0]))
    with pytest.raises(InputError, match="seeds must be an int"):
        Identity()(model(), X, Y, seeds="7")  # type: ignore[arg-type]


def test_bad_pool() -> None:
    with pytest.raises(InputError, match="pool images must have the shape"):
        Identity()(model(), X, Y, pool=(torch.rand(3, 1, 5, 5), torch.tensor([0, 1, 0])))
    with pytest.raises(InputError, match="pool must be a tuple"):
        Identity()(model(), X, Y, pool=[X, Y])  # type: ignore[arg-type]


def test_model_with_wrong_output_shape() -> None:
    bad = nn.Sequential(nn.Flatten(), nn.Linear(16, 1))
    with pytest.raises(InputError, match="at least 2 logits"):
        PGD(eps=0.1, steps=1, step_size=0.1)(bad, X, Y)
    flat = nn.Sequential(nn.Flatten(0))
    with pytest.raises(InputError, match=r"logits \[N, K\]"):
        PGD(eps=0.1, steps=1, step_size=0.1)(flat, X, Y)


def test_model_mode_restored_after_error() -> None:
    bad = nn.Sequential(nn.Flatten(), nn.Linear(16, 1)).train()
    with pytest.raises(InputError):
        PGD(eps=0.1, steps=1, step_size=0.1)(bad, X, Y)
    assert bad.training


@pytest.mark.parametrize(
    "kwargs,match",
    [
        ({"eps": -0.1, "steps": 1, "step_size": 0.1}, "eps must be >= 0"),
        ({"eps": 0.1, "steps": -1, "step_size": 0.1}, "steps must be an integer >= 0"),
        ({"eps": 0.1, "steps": 1.5, "step_size": 0.1}, "steps must be an integer"),
        ({"eps": 0.1, "steps": 1, "step_size": 0.1, "norm": "l1"}, "norm must be one of"),
        ({"eps": 0.1, "steps": 1, "step_size": 0.1, "loss": "hinge"}, "loss must be one of"),
        ({"eps": 0.1, "steps": 1, "step_size": 0.1, "restarts": 0}, "restarts must be"),
    ],
)
def test_bad_pgd_configuration(kwargs: dict[str, object], match: str) -> None:
    with pytest.raises(UsageError, match=match):
        PGD(**kwargs)  # type: ignore[arg-type]


def test_bad_balls() -> None:
    from llrnet.attacks import L2Ball, LinfBall

    with pytest.raises(UsageError, match=r"eps must be >= 0, got -0\.1"):
        LinfBall(-0.1)
    with pytest.raises(UsageError, match="eps must be a number"):
        L2Ball("big")  # type: ignore[arg-type]
    with pytest.raises(UsageError, match="norm='linf' contradicts the ball L2Ball"):
        PGD(L2Ball(1.0), 1, 0.1, norm="linf")
    with pytest.raises(UsageError, match="norm='l2' contradicts the ball LinfBall"):
        pgd_perturb(model(), X, Y, eps=LinfBall(0.1), steps=1, step_size=0.1, norm="l2")


def test_bad_pgd_perturb_and_multi_targeted() -> None:
    with pytest.raises(UsageError, match="norm must be one of"):
        pgd_perturb(model(), X, Y, eps=0.1, steps=1, step_size=0.1, norm="linf2")
    with pytest.raises(UsageError, match="num_targets must be"):
        MultiTargetedPGD(eps=0.1, steps=1, step_size=0.1, num_targets=0)


def test_bad_other_attack_configuration() -> None:
    from llrnet.attacks import (
        SPSA,
        Boundary,
        Chain,
        CommonCorruptions,
        RandomSpatial,
        SpatialGrid,
    )

    with pytest.raises(UsageError, match="grid must be one of"):
        SpatialGrid(grid="diagonal")
    with pytest.raises(UsageError, match=r"\[T, 3\] table"):
        SpatialGrid(grid=[[1.0, 2.0]])
    with pytest.raises(UsageError, match=r"border_fraction must be < 0\.5"):
        SpatialGrid(border_fraction=0.5)
    with pytest.raises(UsageError, match="samples must be even"):
        SPSA(samples=7)
    with pytest.raises(UsageError, match="max_batch must be"):
        SPSA(max_batch=0)
    with pytest.raises(UsageError, match="threshold must be > 0"):
        Boundary(threshold=0.0)
    with pytest.raises(UsageError, match=r"unknown corruptions.*valid names"):
        CommonCorruptions(("gaussian_noise", "rain"))
    with pytest.raises(UsageError, match="severity must be"):
        CommonCorruptions(severity=6)
    with pytest.raises(UsageError, match="at least one stage"):
        Chain()
    with pytest.raises(UsageError, match="border 8 is too large"):
        RandomSpatial(border=8)(model(), torch.rand(1, 1, 4, 4), torch.tensor([0]))


def test_boundary_pool_errors() -> None:
    from llrnet.attacks import Boundary, Chain, RandomSpatial

    with pytest.raises(UsageError, match="needs pool"):
        Boundary()(model(), X, Y)
    with pytest.raises(UsageError, match="needs pool"):
        Chain(RandomSpatial(border=0), Boundary())(model(), X, Y)
    constant = model()
    nn.init.zeros_(constant[1].weight)
    nn.init.zeros_(constant[1].bias)  # predicts class 0 (ties go to class 0)
    zeros = torch.zeros(2, dtype=torch.int64)
    with pytest.raises(InputError, match="no image of a class other than 0"):
        Boundary()(constant, X, zeros, pool=(X, zeros))


def test_corruptions_reject_two_channel_images() -> None:
    from llrnet.attacks import CommonCorruptions

    with pytest.raises(UsageError, match="1- or 3-channel"):
        CommonCorruptions(("contrast",), workers=0)(model2(), torch.rand(1, 2, 4, 4),
                                                     torch.tensor([0]))


def model2() -> nn.Module:
    return nn.Sequential(nn.Flatten(), nn.Linear(32, 2))
