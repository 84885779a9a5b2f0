"""Threat-model balls: projection, random start, ascent step, final clip, names."""

from __future__ import annotations

import pytest
import torch

from llrnet.attacks import PGD, SPSA, Ball, Boundary, L2Ball, LinfBall, SpatialGrid
from llrnet.attacks.balls import BALLS, make_ball, resolve_ball
from llrnet.attacks.parts import ImageRng
from llrnet.core.errors import UsageError


def test_linf_projection_is_cleverhans_clip_then_clip() -> None:
    x = torch.rand(5, 3, 4, 4)
    delta = torch.randn(5, 3, 4, 4)
    out = LinfBall(0.1).project(delta, x)
    torch.testing.assert_close(out, (x + delta.clamp(-0.1, 0.1)).clamp(0, 1) - x)
    torch.testing.assert_close(LinfBall(0.1)(delta, x), out)  # a ball is its projection


def test_l2_projection_rescales_then_clips_to_the_box() -> None:
    x = torch.full((4, 1, 3, 3), 0.5)
    delta = torch.randn(4, 1, 3, 3)
    out = L2Ball(0.2).project(delta, x)
    norms = delta.flatten(1).norm(dim=1).reshape(-1, 1, 1, 1)
    torch.testing.assert_close(out, delta * torch.clamp(0.2 / norms, max=1.0))  # inside the box
    assert (L2Ball(0.2).distance(x, x + out) <= 0.2 + 1e-6).all()


def test_directions_are_sign_and_unit_l2() -> None:
    grad = torch.randn(3, 2, 4, 4)
    torch.testing.assert_close(LinfBall(0.1).direction(grad), grad.sign())
    unit = L2Ball(1.0).direction(grad)
    torch.testing.assert_close(unit.flatten(1).norm(dim=1), torch.ones(3))
    torch.testing.assert_close(unit * grad.flatten(1).norm(dim=1).reshape(-1, 1, 1, 1), grad)
    assert torch.equal(L2Ball(1.0).direction(torch.zeros(2, 3)), torch.zeros(2, 3))


def test_step_is_project_of_an_ascent_step() -> None:
    x = torch.rand(2, 1, 4, 4)
    delta = torch.zeros_like(x)
    grad = torch.randn_like(x)
    ball = LinfBall(0.05)
    expected = (x + (0.03 * grad.sign()).clamp(-0.05, 0.05)).clamp(0, 1) - x
    torch.testing.assert_close(ball.step(delta, grad, x, 0.03), expected)
    twice = ball.step(ball.step(delta, grad, x, 0.03), grad, x, 0.03)
    assert ball.distance(x, x + twice).max() <= 0.05 + 1e-7


@pytest.mark.parametrize("ball", [LinfBall(0.2), L2Ball(0.5)], ids=["linf", "l2"])
def test_random_start_is_in_the_ball_per_image_and_reproducible(ball: Ball) -> None:
    x = torch.rand(6, 3, 5, 5)
    delta = ball.random_start(x, ImageRng(torch.arange(6)).generators)
    assert (ball.distance(x, x + delta) <= ball.eps * (1 + 1e-6)).all()
    assert (x + delta).min() >= 0 and (x + delta).max() <= 1
    assert ball.distance(x, x + delta).max() > 0.5 * ball.eps  # spreads over the ball
    again = ball.random_start(x[2:3], ImageRng(torch.arange(2, 3)).generators)
    torch.testing.assert_close(again, delta[2:3])  # image 2's start ignores its batch-mates


def test_clip_is_the_final_guard_with_l2_slack() -> None:
    x = torch.full((2, 1, 2, 2), 0.5)
    far = x + 0.4
    torch.testing.assert_close(LinfBall(0.1).clip(x, far), x + 0.1)
    on_sphere = x + L2Ball(0.3).direction(torch.randn_like(x)) * 0.3
    torch.testing.assert_close(L2Ball(0.3).clip(x, on_sphere), on_sphere)  # not rescaled
    assert (L2Ball(0.3).distance(x, L2Ball(0.3).clip(x, x + 1.0)) <= 0.3 * (1 + 2e-6)).all()
    torch.testing.assert_close(LinfBall(0.1).distance(x, far), torch.full((2,), 0.4))


def test_names_and_validation() -> None:
    assert make_ball("linf", 0.1) == LinfBall(0.1) and make_ball("l2", 2.0) == L2Ball(2.0)
    assert {name: cls.norm for name, cls in BALLS.items()} == {"linf": "linf", "l2": "l2"}
    with pytest.raises(UsageError, match=r"norm must be one of \['linf', 'l2'\], got 'l1'"):
        make_ball("l1", 0.1)
    with pytest.raises(UsageError, match="eps must be >= 0"):
        LinfBall(-0.1)
    with pytest.raises(TypeError):
        Ball(0.1)  # type: ignore[abstract]
    assert resolve_ball(0.1) == LinfBall(0.1)
    assert resolve_ball(L2Ball(1.0)) == L2Ball(1.0) == resolve_ball(L2Ball(1.0), "l2")
    with pytest.raises(UsageError, match="contradicts the ball"):
        resolve_ball(L2Ball(1.0), "linf")


@pytest.mark.parametrize("norm,ball", [("linf", LinfBall(0.1)), ("l2", L2Ball(1.0))])
def test_pgd_with_a_ball_equals_pgd_with_a_norm_name(norm: str, ball: Ball) -> None:
    torch.manual_seed(0)
    model = torch.nn.Sequential(torch.nn.Flatten(), torch.nn.Linear(16, 2))
    x = torch.rand(3, 1, 4, 4)
    y = torch.tensor([0, 1, 0])
    by_name = PGD(ball.eps, 3, ball.eps / 3, norm=norm)
    by_ball = PGD(ball, 3, ball.eps / 3)
    assert by_name.ball == by_ball.ball == ball and by_ball.eps == ball.eps
    assert torch.equal(by_name(model, x, y, seeds=4), by_ball(model, x, y, seeds=4))


def test_attacks_expose_their_ball() -> None:
    assert SPSA(eps=0.3).ball == LinfBall(0.3)
    assert Boundary(threshold=4.0).ball == L2Ball(4.0) and Boundary(threshold=4.0).threshold == 4.0
    assert SpatialGrid().ball is None and SpatialGrid().eps is None


def test_the_attack_description_records_the_ball() -> None:
    from llrnet.eval.suites import describe_attack

    record = describe_attack(PGD(L2Ball(0.5), 2, 0.1))
    assert record["ball"] == {"class": "L2Ball", "eps": "0.5"}
    assert describe_attack(PGD(0.5, 2, 0.1)) != record  # a resume notices another norm
