"""Training tasks: the dict contract, a backward step, the losses each one defines,
the warm-up, running-average updates, and models with a sigmoid bird head."""

from __future__ import annotations

from pathlib import Path

import pytest
import torch
import torch.nn.functional as F
from torch import Tensor, nn

from llrnet.models.heads import SIGMOID_BIRD_HEAD, BirdLogitView, set_head
from llrnet.train.tasks import LLRTask, PGDTask, StandardTask, TRADESTask
from llrnet.train.tasks.spatial import WorstOfK
from train_helpers import tiny_bn_net, train_override_error


def _net(classes: int = 3) -> nn.Sequential:
    return tiny_bn_net(classes)


def _bird_net() -> nn.Module:
    """``_net(2)`` declaring a sigmoid bird head (column 1 is the bird logit)."""
    return set_head(_net(2), SIGMOID_BIRD_HEAD)


def _batch(n: int = 8, classes: int = 3) -> tuple[Tensor, Tensor]:
    return torch.rand(n, 1, 8, 8), torch.arange(n) % classes


TASKS = {
    "standard": StandardTask(),
    "pgd": PGDTask(eps=0.1, steps=2, step_size=0.05),
    "trades": TRADESTask(eps=0.1, steps=2, step_size=0.05),
    "llr": LLRTask(eps=0.1, steps=2, warmup_steps=0),
}
TERMS = {
    "standard": {"loss", "ce", "accuracy"},
    "pgd": {"loss", "adv_ce", "adv_accuracy", "eps"},
    "trades": {"loss", "ce", "kl", "accuracy", "eps"},
    "llr": {"loss", "ce", "gamma", "grad_term", "regularizer", "accuracy", "eps"},
}
#: How many times each task updates batch-norm running averages per step.
RUNNING_UPDATES = {"standard": 1, "pgd": 1, "trades": 2, "llr": 1}


@pytest.mark.parametrize("name", sorted(TASKS))
def test_task_returns_loss_and_detached_terms_and_trains(name: str) -> None:
    model = _net()
    x, y = _batch()
    out = TASKS[name](model, (x, y), 0)
    assert set(out) == TERMS[name]
    assert out["loss"].dim() == 0 and out["loss"].requires_grad
    for key, value in out.items():
        assert value.dim() == 0 and torch.isfinite(value)
        if key != "loss":
            assert not value.requires_grad, key
    out["loss"].backward()
    for pname, param in model.named_parameters():
        assert param.grad is not None and param.grad.abs().sum() > 0, pname
    # One SGD step on this batch lowers the task's loss.
    before = float(out["loss"].detach())
    with torch.no_grad():
        for param in model.parameters():
            param -= 0.05 * param.grad  # type: ignore[operator]
    torch.manual_seed(1)
    assert float(TASKS[name](model, (x, y), 0)["loss"].detach()) < before


@pytest.mark.parametrize("name", sorted(TASKS))
def test_running_averages_are_updated_only_by_the_training_passes(name: str) -> None:
    model = _net()
    TASKS[name](model, _batch(), 0)
    for module in model.modules():
        if isinstance(module, nn.BatchNorm2d):
            assert int(module.num_batches_tracked) == RUNNING_UPDATES[name]


def test_llr_task_nominal_pass_updates_running_averages_like_a_plain_pass() -> None:
    model, reference = _net(), _net()
    x, y = _batch()
    LLRTask(eps=0.1, steps=2, warmup_steps=0)(model, (x, y), 0)
    reference(x)
    for ours, theirs in zip(model.modules(), reference.modules(), strict=True):
        if isinstance(ours, nn.BatchNorm2d):
            torch.testing.assert_close(ours.running_mean, theirs.running_mean)
            torch.testing.assert_close(ours.running_var, theirs.running_var)


def test_llr_task_combines_the_terms_with_its_weights() -> None:
    model = _net()
    x, y = _batch()
    task = LLRTask(eps=0.1, steps=1, lam=3.0, mu=0.5, nominal_weight=1.5, warmup_steps=0)
    out = task(model, (x, y), 0)
    torch.testing.assert_close(out["loss"].detach(), 1.5 * out["ce"] + 3.0 * out["regularizer"])
    torch.testing.assert_close(out["regularizer"], out["gamma"] + 0.5 * out["grad_term"])
    torch.testing.assert_close(out["ce"], F.cross_entropy(_net()(x), y).detach())
    assert out["gamma"] > 0 and out["grad_term"] > 0


def test_defaults_are_the_official_cifar10_configuration() -> None:
    task = LLRTask()
    assert (task.eps, task.steps, task.lam, task.mu, task.nominal_weight) == (
        8 / 255, 10, 4.0, 0.3, 2.0)
    assert (task.warmup_steps, task.lr, task.betas, task.adam_eps) == (
        500, 0.1, (0.9, 0.999), 1e-9)


def test_eps_warmup_reaches_the_inner_loop() -> None:
    task = LLRTask(eps=0.2, steps=2, warmup_steps=10)
    assert [task.eps_at(s) for s in (0, 5, 10, 50)] == pytest.approx([0.0, 0.1, 0.2, 0.2])
    model = _net()
    seen: list[Tensor] = []
    x, y = _batch()
    model[0].register_forward_pre_hook(lambda _m, inp: seen.append(inp[0].detach().clone()))
    out = task(model, (x, y), 5)
    assert float(out["eps"]) == pytest.approx(0.1)
    radius = max(float((p - x).abs().max()) for p in seen)
    assert 0.09 < radius <= 0.1 + 1e-6
    seen.clear()
    assert float(task(model, (x, y), 0)["regularizer"]) < 1e-5
    assert max(float((p - x).abs().max()) for p in seen) == 0.0


def test_pgd_task_trains_on_points_inside_the_ball_and_warms_up() -> None:
    task = PGDTask(eps=0.1, steps=3, step_size=0.04, warmup_steps=4)
    model = _net()
    seen: list[Tensor] = []
    x, y = _batch()
    x[:, :, :2] = 1.0
    model[0].register_forward_pre_hook(lambda _m, inp: seen.append(inp[0].detach().clone()))
    out = task(model, (x, y), 2)
    assert float(out["eps"]) == pytest.approx(0.05)
    assert len(seen) == 3 + 1
    for point in seen:
        assert float(point.min()) >= 0.0 and float(point.max()) <= 1.0
        assert float((point - x).abs().max()) <= 0.05 + 1e-6
    # The attacked loss is above the clean loss.
    clean = StandardTask()(_net(), (x, y), 0)["ce"]
    assert out["adv_ce"] > clean


def test_pgd_task_without_attack_is_standard_training() -> None:
    x, y = _batch()
    pgd = PGDTask(eps=0.1, steps=0, random_start=False)(_net(), (x, y), 0)
    std = StandardTask()(_net(), (x, y), 0)
    torch.testing.assert_close(pgd["loss"], std["loss"])


def test_trades_kl_term_vanishes_without_perturbation_and_grows_with_it() -> None:
    x, y = _batch()
    none = TRADESTask(eps=0.0, steps=2, step_size=0.0)(_net(), (x, y), 0)
    assert float(none["kl"]) < 1e-6
    torch.testing.assert_close(none["loss"], none["ce"] + 6.0 * none["kl"], rtol=0, atol=1e-5)
    some = TRADESTask(eps=0.2, steps=3, step_size=0.1, beta=2.0)(_net(), (x, y), 0)
    assert float(some["kl"]) > 1e-4
    torch.testing.assert_close(some["loss"].detach(), some["ce"] + 2.0 * some["kl"])


def test_sigmoid_bird_head_is_bce_on_the_bird_logit() -> None:
    x, y = _batch(classes=2)
    logits = _net(2)(x)
    expected = F.binary_cross_entropy_with_logits(logits[:, 1], y.float())
    out = StandardTask()(_bird_net(), (x, y), 0)
    torch.testing.assert_close(out["loss"], expected)
    torch.testing.assert_close(SIGMOID_BIRD_HEAD.per_example_loss(logits, y).mean(), expected)
    # Softmax CE of the view [0, z] is the same BCE, so CE attacks attack the sigmoid head.
    view = BirdLogitView(_bird_net())
    torch.testing.assert_close(F.cross_entropy(view(x), y), expected)
    for task in (PGDTask(eps=0.1, steps=1),
                 TRADESTask(eps=0.1, steps=1),
                 LLRTask(eps=0.1, steps=1, warmup_steps=0)):
        result = task(_bird_net(), (x, y), 0)
        result["loss"].backward()
        assert torch.isfinite(result["loss"])


def test_llr_on_a_sigmoid_bird_head_uses_bce_as_the_nominal_loss() -> None:
    x, y = _batch(classes=2)
    out = LLRTask(eps=0.05, steps=1, warmup_steps=0)(_bird_net(), (x, y), 0)
    expected = F.binary_cross_entropy_with_logits(_net(2)(x)[:, 1], y.float())
    torch.testing.assert_close(out["ce"], expected.detach())


def test_logit_margin_trains_a_margin_loss_on_the_same_attack() -> None:
    x, y = _batch(classes=2)
    sign = 2 * y.float() - 1
    # No attack: the trained loss is softplus(m - s * l) of the clean bird logit.
    out = PGDTask(eps=0.1, steps=0, random_start=False, logit_margin=1.5)(_bird_net(), (x, y), 0)
    bird = _net(2)(x)[:, 1]
    torch.testing.assert_close(out["loss"], F.softplus(1.5 - sign * bird).mean())
    torch.testing.assert_close(out["adv_ce"],
                               F.binary_cross_entropy_with_logits(bird, y.float()))
    assert float(out["loss"].detach()) > float(out["adv_ce"])
    # With an attack: the same adversarial images (the logged plain terms agree).
    runs = []
    for margin in (0.0, 2.0):
        torch.manual_seed(5)
        runs.append(PGDTask(eps=0.1, steps=2, step_size=0.05, logit_margin=margin)(
            _bird_net(), (x, y), 0))
    torch.testing.assert_close(runs[0]["adv_ce"], runs[1]["adv_ce"])
    torch.testing.assert_close(runs[0]["loss"], runs[0]["adv_ce"])
    assert float(runs[1]["loss"].detach()) > float(runs[1]["adv_ce"])


def test_trades_logit_margin_moves_only_the_clean_term() -> None:
    x, y = _batch()
    runs = []
    for margin in (0.0, 1.0):
        torch.manual_seed(2)
        runs.append(TRADESTask(eps=0.1, steps=2, step_size=0.05, beta=2.0,
                               logit_margin=margin)(_net(), (x, y), 0))
    plain, margined = runs
    torch.testing.assert_close(margined["kl"], plain["kl"])
    torch.testing.assert_close(margined["ce"], plain["ce"])
    moved = _net()(x) - F.one_hot(y, 3).float()
    torch.testing.assert_close(margined["loss"].detach(),
                               F.cross_entropy(moved, y) + 2.0 * plain["kl"])


def test_clean_weight_mixes_the_clean_and_adversarial_losses() -> None:
    x, y = _batch(classes=2)
    sign = 2 * y.float() - 1
    # No attack, so both passes see x: the mixture is the (margined) clean BCE itself.
    task = PGDTask(eps=0.1, steps=0, random_start=False, logit_margin=0.5, clean_weight=0.3)
    out = task(_bird_net(), (x, y), 0)
    bird = _net(2)(x)[:, 1]
    torch.testing.assert_close(out["loss"], F.softplus(0.5 - sign * bird).mean())
    torch.testing.assert_close(out["ce"], F.binary_cross_entropy_with_logits(bird, y.float()))
    assert task.passes_per_step().forward_backward == 2
    # With an attack: (1 - w) adversarial + w clean, the adversarial images unchanged.
    runs = []
    for weight in (0.0, 0.25):
        torch.manual_seed(3)
        runs.append(PGDTask(eps=0.1, steps=2, step_size=0.05, clean_weight=weight)(
            _net(), (x, y), 0))
    plain, mixed = runs
    assert "ce" not in plain and set(mixed) == TERMS["pgd"] | {"ce", "accuracy"}
    torch.testing.assert_close(mixed["adv_ce"], plain["adv_ce"])
    torch.testing.assert_close(mixed["ce"], F.cross_entropy(_net()(x), y))
    torch.testing.assert_close(mixed["loss"].detach(),
                               0.75 * plain["adv_ce"] + 0.25 * mixed["ce"])
    assert float(mixed["adv_ce"]) > float(mixed["ce"])
    # The clean pass updates the running averages too: twice per step, as TRADES.
    model = _net()
    PGDTask(eps=0.1, steps=2, step_size=0.05, clean_weight=0.5)(model, (x, y), 0)
    assert {int(m.num_batches_tracked) for m in model.modules()
            if isinstance(m, nn.BatchNorm2d)} == {2}


def test_clean_weight_reads_the_image_before_the_spatial_step() -> None:
    x, y = _batch(classes=2)
    seen: list[Tensor] = []
    model = _net(2)
    model[0].register_forward_pre_hook(lambda _m, inp: seen.append(inp[0].detach().clone()))
    task = PGDTask(eps=0.0, steps=0, random_start=False, clean_weight=1.0,
                   spatial=WorstOfK(k=2, limits=(3.0, 3.0, 20.0), include_original=False))
    out = task(model, (x, y), 0)
    # Worst-of-k's one batched forward of N * k images, then the clean pass on x
    # itself, then the training pass on the chosen transforms.
    assert [len(batch) for batch in seen] == [2 * len(x), len(x), len(x)]
    torch.testing.assert_close(seen[1], x)
    assert float((seen[2] - x).abs().max()) > 0.1
    torch.testing.assert_close(out["loss"].detach(), out["ce"])


@pytest.mark.parametrize("weight", [-0.1, 1.5])
def test_a_clean_weight_outside_0_1_is_refused(weight: float) -> None:
    with pytest.raises(ValueError, match=rf"clean_weight must be in \[0, 1\], got {weight}"):
        PGDTask(clean_weight=weight)


@pytest.mark.parametrize("task", [PGDTask, TRADESTask])
def test_a_negative_logit_margin_is_refused(task: type[PGDTask | TRADESTask]) -> None:
    with pytest.raises(ValueError, match=r"logit_margin must be >= 0, got -0\.5"):
        task(logit_margin=-0.5)


def test_a_negative_logit_margin_is_one_cli_error_and_writes_nothing(
        tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    err = train_override_error(tmp_path, capsys, "task.options.logit_margin=-1")
    assert err == "llrnet train: error: logit_margin must be >= 0, got -1.0\n"


def test_a_clean_weight_outside_0_1_is_one_cli_error_and_writes_nothing(
        tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    err = train_override_error(tmp_path, capsys, "task.options.clean_weight=1.5")
    assert err == "llrnet train: error: clean_weight must be in [0, 1], got 1.5\n"
