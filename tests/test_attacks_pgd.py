"""PGD, multi-targeted PGD, the functional training form, and the base class."""

from __future__ import annotations

import pytest
import torch
from torch import nn

from llrnet.attacks import PGD, Identity, MultiTargetedPGD
from llrnet.attacks.pgd import pgd_perturb

pytestmark = pytest.mark.usefixtures("one_thread")


def linear_model(classes: int = 2, seed: int = 0) -> nn.Module:
    torch.manual_seed(seed)
    return nn.Sequential(nn.Flatten(), nn.Linear(64, classes))


def bn_model() -> nn.Module:
    return nn.Sequential(
        nn.Conv2d(1, 4, 3, padding=1), nn.BatchNorm2d(4), nn.ReLU(), nn.Flatten(),
        nn.Linear(4 * 64, 2),
    )


def correctly_classified(model: nn.Module, n: int, classes: int = 2) -> tuple[torch.Tensor, ...]:
    x = torch.rand(n, 1, 8, 8)
    with torch.no_grad():
        y = model(x).argmax(1)
    return x, y


@pytest.mark.parametrize("norm,eps", [("linf", 0.1), ("l2", 1.0)])
def test_pgd_fools_linear_model_within_ball(norm: str, eps: float) -> None:
    model = linear_model()
    x, y = correctly_classified(model, 16)
    attack = PGD(eps=eps, steps=20, step_size=eps / 4, norm=norm)
    x_adv = attack(model, x, y, seeds=0)
    assert x_adv.shape == x.shape and x_adv.dtype == x.dtype
    assert x_adv.min() >= 0 and x_adv.max() <= 1
    dist = (x_adv - x).flatten(1)
    if norm == "linf":
        assert dist.abs().max() <= eps + 1e-6
    else:
        assert (dist.norm(dim=1) <= eps * (1 + 1e-5)).all()
    with torch.no_grad():
        wrong = (model(x_adv).argmax(1) != y).float().mean()
        clean_margin = model(x).gather(1, y[:, None]).squeeze(1) - model(x).gather(
            1, (1 - y)[:, None]
        ).squeeze(1)
    # A linear model's margin can only drop; with these budgets most images flip.
    assert wrong >= 0.75, (wrong, clean_margin)
    assert attack.last_stats["model_evaluations"] == 20 * 16


def test_pgd_margin_loss_and_no_random_start_is_deterministic() -> None:
    model = linear_model()
    x, y = correctly_classified(model, 4)
    attack = PGD(eps=0.05, steps=3, step_size=0.02, loss="margin", random_start=False)
    a = attack(model, x, y, seeds=0)
    b = attack(model, x, y, seeds=123)
    torch.testing.assert_close(a, b)
    # Exact first step of L-inf PGD from x on a linear model: sign of the weight difference.
    one = PGD(eps=0.05, steps=1, step_size=0.02, loss="margin", random_start=False)
    w = model[1].weight.detach()
    direction = (w[1 - y] - w[y]).sign().reshape(4, 1, 8, 8)
    expected = (x + 0.02 * direction).clamp(0, 1)
    torch.testing.assert_close(one(model, x, y), expected)


def test_pgd_batch_invariance() -> None:
    model = linear_model()
    x, y = correctly_classified(model, 6)
    seeds = torch.tensor([5, 9, 1, 4, 4, 8])
    attack = PGD(eps=0.1, steps=4, step_size=0.03, restarts=2)
    full = attack(model, x, y, seeds=seeds)
    for i in (0, 3, 5):
        alone = attack(model, x[i : i + 1], y[i : i + 1], seeds=seeds[i : i + 1])
        torch.testing.assert_close(full[i : i + 1], alone, rtol=1e-5, atol=1e-6)
    # An int seed s means image i uses s + i.
    torch.testing.assert_close(
        attack(model, x, y, seeds=3)[2:3], attack(model, x[2:3], y[2:3], seeds=5)
    )


def test_restarts_keep_the_per_image_worst() -> None:
    model = linear_model()
    x, y = correctly_classified(model, 8)

    def margin(x_adv: torch.Tensor) -> torch.Tensor:
        with torch.no_grad():
            logits = model(x_adv)
        return logits.gather(1, (1 - y)[:, None]) - logits.gather(1, y[:, None])

    one = PGD(eps=0.02, steps=1, step_size=0.005)(model, x, y, seeds=0)
    many_attack = PGD(eps=0.02, steps=1, step_size=0.005, restarts=4)
    many = many_attack(model, x, y, seeds=0)
    # The first restart draws exactly what the single run drew.
    assert (margin(many) >= margin(one) - 1e-6).all()
    assert (margin(many) > margin(one) + 1e-6).any()
    assert many_attack.last_stats["model_evaluations"] == 4 * (8 + 8)


def test_multi_targeted_pgd_fools_three_class_model() -> None:
    model = linear_model(classes=3, seed=2)
    x, y = correctly_classified(model, 12, classes=3)
    attack = MultiTargetedPGD(eps=0.15, steps=10, step_size=0.04)
    x_adv = attack(model, x, y, seeds=0)
    assert (x_adv - x).abs().max() <= 0.15 + 1e-6
    with torch.no_grad():
        assert (model(x_adv).argmax(1) != y).float().mean() >= 0.75
    # clean pass + 2 targets x (10 steps + 1 selection pass)
    assert attack.last_stats["model_evaluations"] == 12 + 2 * (10 + 1) * 12
    limited = MultiTargetedPGD(eps=0.15, steps=10, step_size=0.04, num_targets=1)
    limited(model, x, y)
    assert limited.last_stats["model_evaluations"] == 12 + 11 * 12


@pytest.mark.parametrize("training", [True, False])
def test_model_mode_restored_and_eval_mode_used(training: bool) -> None:
    model = bn_model()
    model.train(training)
    running = model[1].running_mean.clone()
    x = torch.rand(4, 1, 8, 8)
    y = torch.tensor([0, 1, 0, 1])
    PGD(eps=0.1, steps=2, step_size=0.05)(model, x, y)
    assert model.training is training
    assert all(m.training is training for m in model.modules())
    torch.testing.assert_close(model[1].running_mean, running)  # eval mode: stats untouched
    assert all(p.grad is None for p in model.parameters())


def test_pgd_perturb_keeps_train_mode_and_param_grads() -> None:
    model = bn_model().train()
    x = torch.rand(4, 1, 8, 8)
    y = torch.tensor([0, 1, 0, 1])
    gen = torch.Generator().manual_seed(0)
    x_adv = pgd_perturb(model, x, y, eps=0.1, steps=3, step_size=0.04, norm="linf",
                        loss="ce", random_start=True, generator=gen)
    assert model.training
    assert all(p.grad is None for p in model.parameters())
    assert not x_adv.requires_grad
    assert (x_adv - x).abs().max() <= 0.1 + 1e-6 and x_adv.min() >= 0 and x_adv.max() <= 1
    again = pgd_perturb(model.eval(), x, y, eps=0.1, steps=3, step_size=0.04,
                        generator=torch.Generator().manual_seed(0))
    x_adv_eval = pgd_perturb(model, x, y, eps=0.1, steps=3, step_size=0.04,
                             generator=torch.Generator().manual_seed(0))
    torch.testing.assert_close(again, x_adv_eval)
    l2 = pgd_perturb(model, x, y, eps=0.5, steps=2, step_size=0.3, norm="l2", loss="margin",
                     random_start=False, generator=None)
    assert ((l2 - x).flatten(1).norm(dim=1) <= 0.5 * (1 + 1e-5)).all()


def test_identity_returns_input_without_evaluations() -> None:
    model = linear_model()
    x, y = correctly_classified(model, 3)
    attack = Identity()
    torch.testing.assert_close(attack(model, x, y), x)
    assert attack.last_stats["model_evaluations"] == 0
    assert attack.name == "clean"


def test_pgd_works_under_no_grad_and_empty_batch() -> None:
    model = linear_model()
    x, y = correctly_classified(model, 2)
    with torch.no_grad():
        x_adv = PGD(eps=0.1, steps=2, step_size=0.05)(model, x, y)
    assert not torch.equal(x_adv, x)
    empty = PGD(eps=0.1, steps=2, step_size=0.05)(model, x[:0], y[:0])
    assert empty.shape == (0, 1, 8, 8)
