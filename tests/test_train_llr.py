"""The LLR regularizer against oracles: analytic deviations, finite differences,
the projection, the warm-up, and one guard per "known mistake" of public ports."""

from __future__ import annotations

import pytest
import torch
import torch.nn.functional as F
from torch import Tensor, nn

from llrnet.train.llr import (
    LLROptions,
    LLRTerms,
    linear_warmup,
    llr_regularizer,
    maximize_deviation,
)

EPS = 0.05


def quadratic_loss(curvature: Tensor):  # type: ignore[no-untyped-def]
    """Per-example loss 0.5 * s_i * sum_j a_j z_j^2 + sum_j z_j with z = model(x) = x.

    s_i = +1 for label 1 and -1 for label 0, so the analytic deviation at d is
    |0.5 * sum_j a_j d_j^2| and its sign differs between the two labels.
    """

    def loss_fn(z: Tensor, y: Tensor) -> Tensor:
        sign = (2 * y - 1).to(z.dtype)
        return 0.5 * sign * (curvature * z * z).sum(dim=1) + z.sum(dim=1)

    return loss_fn


def interior_batch(n: int = 4, d: int = 6, dtype: torch.dtype = torch.float32) -> Tensor:
    """Images [n, 1, 1, d] with every pixel at least EPS away from 0 and 1."""
    return (EPS + (1 - 2 * EPS) * torch.rand(n, 1, 1, d)).to(dtype)


def test_deviation_equals_analytic_value_for_a_quadratic_loss() -> None:
    x = interior_batch()
    y = torch.tensor([1, 0, 1, 0])
    a = torch.tensor([1.0, 2.0, 0.5, 3.0, 1.5, 0.25])
    terms = llr_regularizer(nn.Flatten(), x, y,
                            LLROptions(eps=EPS, steps=3, mu=0.0, loss_fn=quadratic_loss(a)))
    d = terms.delta.flatten(1)
    analytic = 0.5 * (a * d * d).sum(dim=1)
    torch.testing.assert_close(terms.deviation, analytic, rtol=1e-4, atol=1e-7)
    # Positive curvature in every coordinate: the maximizer is a corner of the
    # ball, reached by the clipped Adam steps (lr 0.1 >> eps) -> gamma = 0.5 eps^2 sum a.
    assert torch.allclose(d.abs(), torch.full_like(d, EPS))
    torch.testing.assert_close(terms.deviation, torch.full((4,), 0.5 * EPS**2 * float(a.sum())))


def test_deviation_is_zero_for_a_loss_linear_in_the_input() -> None:
    x = interior_batch()
    y = torch.tensor([0, 1, 1, 0])
    weight = torch.randn(3, 6)
    model = nn.Sequential(nn.Flatten(), nn.Linear(6, 3))
    with torch.no_grad():
        model[1].weight.copy_(weight)
    options = LLROptions(eps=EPS, steps=5, mu=0.3,
                         loss_fn=lambda z, _y: z @ torch.tensor([1.0, -2.0, 0.5]))
    terms = llr_regularizer(model, x, y, options)
    assert terms.deviation.abs().max() < 1e-5
    # ... while the gradient term is the exact |d . grad l|.
    grad = weight.t() @ torch.tensor([1.0, -2.0, 0.5])
    torch.testing.assert_close(terms.grad_term, (terms.delta.flatten(1) @ grad).abs())
    torch.testing.assert_close(terms.regularizer, 0.3 * terms.grad_term.mean() +
                               terms.deviation.mean())


def test_abs_is_taken_per_example_not_of_the_batch_mean() -> None:
    # Known mistake: |mean_i diff_i| instead of mean_i |diff_i|. Here the diffs
    # of labels 0 and 1 cancel exactly, so the wrong version would give ~0.
    x = interior_batch()
    y = torch.tensor([1, 0, 1, 0])
    a = torch.ones(6)
    terms = llr_regularizer(nn.Flatten(), x, y,
                            LLROptions(eps=EPS, steps=3, mu=0.0, loss_fn=quadratic_loss(a)))
    expected = 0.5 * EPS**2 * 6
    torch.testing.assert_close(terms.regularizer, torch.tensor(expected))
    assert terms.deviation.min() > 0.9 * expected


class _Smooth(nn.Module):
    """Conv -> BN -> softplus -> linear: a smooth tiny model with batch norm."""

    def __init__(self) -> None:
        super().__init__()
        self.conv = nn.Conv2d(1, 3, 3, padding=1)
        self.bn = nn.BatchNorm2d(3)
        self.fc = nn.Linear(3 * 5 * 5, 3)
        with torch.no_grad():
            self.bn.weight.uniform_(0.5, 1.5)
            self.bn.bias.uniform_(-0.5, 0.5)

    def forward(self, x: Tensor) -> Tensor:
        return self.fc(F.softplus(self.bn(self.conv(x))).flatten(1))


def test_examples_do_not_mix_across_the_batch() -> None:
    # Known mistake: dot products across examples (an N x N matrix). Without batch
    # norm, example 0's terms must not depend on the other examples.
    model = nn.Sequential(nn.Flatten(), nn.Linear(25, 8), nn.Softplus(), nn.Linear(8, 3))
    x = torch.rand(4, 1, 5, 5)
    y = torch.tensor([0, 1, 2, 1])
    first = llr_regularizer(model, x, y, LLROptions(eps=0.1, steps=3),
                            generator=torch.Generator().manual_seed(1))
    x2 = x.clone()
    x2[1:] = torch.rand(3, 1, 5, 5)
    second = llr_regularizer(model, x2, y, LLROptions(eps=0.1, steps=3),
                             generator=torch.Generator().manual_seed(1))
    torch.testing.assert_close(first.delta[0], second.delta[0])
    torch.testing.assert_close(first.deviation[0], second.deviation[0])
    torch.testing.assert_close(first.grad_term[0], second.grad_term[0])
    assert not torch.allclose(first.deviation[1:], second.deviation[1:])


def _regularizer_at(model: nn.Module, x: Tensor, y: Tensor) -> Tensor:
    # steps=0: d is the seeded uniform start, independent of the parameters, so
    # R(theta) is a smooth function that finite differences can check.
    terms = llr_regularizer(model, x, y, LLROptions(eps=0.1, steps=0, mu=0.3),
                            generator=torch.Generator().manual_seed(3))
    return terms.regularizer


def test_parameter_gradients_match_finite_differences() -> None:
    model = _Smooth().double().train()
    x = torch.rand(6, 1, 5, 5, dtype=torch.float64)
    y = torch.tensor([0, 1, 2, 0, 1, 2])
    params = [p for p in model.parameters()]
    reg = _regularizer_at(model, x, y)
    grads = torch.autograd.grad(reg, params)
    h = 1e-6
    for param, grad in zip(params, grads, strict=True):
        direction = torch.randn_like(param)
        with torch.no_grad():
            param.add_(h * direction)
            up = _regularizer_at(model, x, y)
            param.sub_(2 * h * direction)
            down = _regularizer_at(model, x, y)
            param.add_(h * direction)
        numeric = (up - down) / (2 * h)
        analytic = (grad * direction).sum()
        torch.testing.assert_close(analytic, numeric, rtol=1e-5, atol=1e-9)


def test_double_backprop_contributes_to_the_gradient() -> None:
    # Known mistake: grad_x l computed without create_graph. The term through G
    # must carry a non-negligible part of the parameter gradient.
    model = _Smooth().double().train()
    x = torch.rand(6, 1, 5, 5, dtype=torch.float64)
    y = torch.tensor([0, 1, 2, 0, 1, 2])
    terms = llr_regularizer(model, x, y, LLROptions(eps=0.1, steps=0),
                            generator=torch.Generator().manual_seed(3))
    weight = model.conv.weight
    full = torch.autograd.grad(terms.regularizer, weight, retain_graph=True)[0]
    # The same objective with G treated as a constant.
    x_var = x.clone().requires_grad_(True)
    from llrnet.train.bn_replay import BatchNormReplay

    replay = BatchNormReplay(model)
    with replay.record(update_running_stats=False):
        clean = F.cross_entropy(model(x_var), y, reduction="none")
    g = torch.autograd.grad(clean.sum(), x_var, retain_graph=True)[0]
    with replay.replay(detach=False):
        pert = F.cross_entropy(model(x + terms.delta), y, reduction="none")
    lin = (terms.delta * g).flatten(1).sum(1)
    no_second_order = ((pert - clean - lin).abs() + 0.3 * lin.abs()).mean()
    torch.testing.assert_close(no_second_order, terms.regularizer)  # same value...
    partial = torch.autograd.grad(no_second_order, weight)[0]
    assert (full - partial).norm() > 1e-3 * full.norm()  # ...different gradient


def test_inner_loop_never_leaves_the_ball_or_the_box() -> None:
    model = nn.Sequential(nn.Conv2d(1, 4, 3), nn.BatchNorm2d(4), nn.Softplus(), nn.Flatten(),
                          nn.Linear(4 * 6 * 6, 3)).train()
    x = torch.rand(8, 1, 8, 8)
    x[:, :, :3] = 0.0  # pixels on the box's faces
    x[:, :, -3:] = 1.0
    y = torch.randint(0, 3, (8,))
    eps = 0.2
    seen: list[Tensor] = []
    model[0].register_forward_pre_hook(lambda _m, inp: seen.append(inp[0].detach().clone()))
    terms = llr_regularizer(model, x, y, LLROptions(eps=eps, steps=6))
    assert len(seen) == 1 + 6 + 1  # clean, inner steps, regularizer
    for point in seen:
        assert point.min() >= 0.0 and point.max() <= 1.0
        assert (point - x).abs().max() <= eps + 1e-6
    # Clipped per coordinate (not rescaled): many coordinates sit exactly on the ball.
    assert ((terms.delta.abs() - eps).abs() < 1e-6).float().mean() > 0.3


def test_maximize_deviation_increases_the_objective_over_its_start() -> None:
    model = nn.Sequential(nn.Flatten(), nn.Linear(16, 8), nn.Softplus(), nn.Linear(8, 3))
    x = torch.rand(5, 1, 4, 4)
    y = torch.randint(0, 3, (5,))
    xv = x.clone().requires_grad_(True)
    clean = F.cross_entropy(model(xv), y, reduction="none")
    g = torch.autograd.grad(clean.sum(), xv)[0]

    def objective(d: Tensor) -> float:
        with torch.no_grad():
            pert = F.cross_entropy(model(x + d), y, reduction="none")
        return float((pert - clean.detach() - (d * g).flatten(1).sum(1)).abs().mean())

    start = maximize_deviation(model, x, y, clean, g, LLROptions(eps=0.3, steps=0),
                               generator=torch.Generator().manual_seed(0))
    found = maximize_deviation(model, x, y, clean, g, LLROptions(eps=0.3, steps=10),
                               generator=torch.Generator().manual_seed(0))
    assert objective(found) > 1.5 * objective(start)


def test_linear_warmup_schedule() -> None:
    assert linear_warmup(0.5, 0, 100) == 0.0
    assert linear_warmup(0.5, 25, 100) == pytest.approx(0.125)
    assert linear_warmup(0.5, 100, 100) == 0.5
    assert linear_warmup(0.5, 10_000, 100) == 0.5
    assert linear_warmup(0.5, 0, 0) == 0.5


def test_zero_radius_gives_zero_regularizer() -> None:
    model = _Smooth().train()
    x = torch.rand(4, 1, 5, 5)
    y = torch.tensor([0, 1, 2, 0])
    terms = llr_regularizer(model, x, y, LLROptions(eps=0.0, steps=2))
    assert isinstance(terms, LLRTerms)
    assert float(terms.delta.abs().max()) == 0.0
    assert float(terms.regularizer.detach()) < 1e-5
