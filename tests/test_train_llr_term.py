"""The LLR term of the adversarial tasks (option ``llr``): the loss it adds, its radius,
its cost, its batch-norm behaviour and its configuration."""

from __future__ import annotations

from pathlib import Path

import pytest
import torch
from torch import Tensor, nn

from llrnet.models.heads import SIGMOID_BIRD_HEAD, head_of, set_head
from llrnet.train import load_config
from llrnet.train.build import build_task
from llrnet.train.llr import LLROptions, llr_regularizer
from llrnet.train.tasks import LLRTerm, PGDTask, TRADESTask
from train_helpers import tiny_bn_net, train_override_error


def _net(classes: int = 3) -> nn.Sequential:
    return tiny_bn_net(classes)


def _batch(n: int = 8, classes: int = 3) -> tuple[Tensor, Tensor]:
    torch.manual_seed(3)
    return torch.rand(n, 1, 8, 8), torch.arange(n) % classes


def _updates(model: nn.Module) -> set[int]:
    return {int(m.num_batches_tracked) for m in model.modules()  # type: ignore[arg-type]
            if isinstance(m, nn.BatchNorm2d)}


@pytest.mark.parametrize("bird", [False, True])
def test_pgd_loss_gains_exactly_lambda_times_the_regularizer(bird: bool) -> None:
    classes = 2 if bird else 3
    x, y = _batch(classes=classes)
    term = LLRTerm(lam=2.5, mu=0.3, steps=2)
    # No attack (steps 0, no random start): the PGD loss is the clean loss, and the
    # only random numbers are the regularizer's uniform start.
    task = PGDTask(eps=0.1, steps=0, random_start=False, llr=term)

    def model() -> nn.Module:
        net = _net(classes)
        return set_head(net, SIGMOID_BIRD_HEAD) if bird else net

    trained, reference = model(), model()
    torch.manual_seed(7)
    out = task(trained, (x, y), 0)
    head = head_of(reference)
    torch.manual_seed(7)
    terms = llr_regularizer(reference, x, y, LLROptions(eps=0.1, steps=2, mu=0.3,
                                                        loss_fn=head.per_example_loss))
    plain = head.loss(reference(x), y)
    torch.testing.assert_close(out["loss"], plain + 2.5 * terms.regularizer)
    torch.testing.assert_close(out["llr_regularizer"], terms.regularizer.detach())
    torch.testing.assert_close(out["llr_gamma"], terms.deviation.mean().detach())
    assert float(out["llr_regularizer"]) > 0
    assert not out["llr_regularizer"].requires_grad and out["loss"].requires_grad


def test_trades_loss_gains_the_term_and_lambda_zero_changes_nothing() -> None:
    x, y = _batch()
    base = TRADESTask(eps=0.1, steps=2, step_size=0.05)
    with_term = TRADESTask(eps=0.1, steps=2, step_size=0.05, llr=LLRTerm(lam=3.0, steps=1))
    zero = TRADESTask(eps=0.1, steps=2, step_size=0.05, llr=LLRTerm(lam=0.0, steps=1))
    nets = [_net() for _ in range(3)]
    torch.manual_seed(1)
    plain = base(nets[0], (x, y), 0)
    torch.manual_seed(1)
    out = with_term(nets[1], (x, y), 0)
    torch.manual_seed(1)
    none = zero(nets[2], (x, y), 0)
    # The term is computed after TRADES' own passes: the TRADES terms are unchanged.
    for key in ("ce", "kl", "accuracy"):
        torch.testing.assert_close(out[key], plain[key])
    torch.testing.assert_close(out["loss"].detach(),
                               plain["loss"].detach() + 3.0 * out["llr_regularizer"])
    torch.testing.assert_close(none["loss"], plain["loss"])
    out["loss"].backward()


@pytest.mark.parametrize("task", [
    PGDTask(eps=0.1, steps=2, step_size=0.05, llr=LLRTerm(steps=2)),
    TRADESTask(eps=0.1, steps=2, step_size=0.05, llr=LLRTerm(steps=2)),
], ids=["pgd", "trades"])
def test_the_term_leaves_the_running_averages_to_the_task(task: PGDTask | TRADESTask) -> None:
    plain = type(task)(eps=0.1, steps=2, step_size=0.05)
    model, reference = _net(), _net()
    task(model, _batch(), 0)
    plain(reference, _batch(), 0)
    assert _updates(model) == _updates(reference) == {1 if isinstance(task, PGDTask) else 2}


def test_the_regularizer_ball_follows_the_task_radius_or_its_own_with_the_warm_up() -> None:
    assert LLRTerm().radius(0.05, step=3, warmup_steps=6) == 0.05
    assert LLRTerm(eps=0.2).radius(0.05, step=3, warmup_steps=6) == pytest.approx(0.1)
    assert LLRTerm(eps=0.2).radius(0.1, step=9, warmup_steps=6) == pytest.approx(0.2)
    x, y = _batch()
    x[:, :, :2] = 1.0
    seen: list[Tensor] = []
    model = _net()
    model[0].register_forward_pre_hook(lambda _m, inp: seen.append(inp[0].detach().clone()))
    # No attack, so every perturbed pass is the regularizer's: inside its 0.06 ball, in [0, 1].
    task = PGDTask(eps=0.02, steps=0, random_start=False, warmup_steps=0,
                   llr=LLRTerm(eps=0.06, steps=2))
    task(model, (x, y), 0)
    radii = [float((p - x).abs().max()) for p in seen]
    assert len(seen) == 1 + 1 + 2 + 1  # PGD's forward, clean, 2 inner steps, perturbed
    assert max(radii) <= 0.06 + 1e-6 and max(radii) > 0.03
    assert all(float(p.min()) >= 0.0 and float(p.max()) <= 1.0 for p in seen)


def test_the_term_adds_its_passes_to_the_step_cost() -> None:
    assert PGDTask(steps=3, llr=LLRTerm(steps=2)).passes_per_step().forward_backward == 4 + 4
    assert TRADESTask(steps=3, llr=LLRTerm(steps=1)).passes_per_step().forward_backward == 5 + 3


@pytest.mark.parametrize("options, message", [
    ({"lam": -1.0}, "llr.lam"), ({"steps": -1}, "llr.steps"), ({"eps": -0.1}, "llr.eps"),
    ({"lr": 0.0}, "llr.lr"),
])
def test_bad_values_are_refused(options: dict[str, float], message: str) -> None:
    with pytest.raises(ValueError, match=message):
        LLRTerm(**options)  # type: ignore[arg-type]


def test_a_preset_sets_the_term_under_task_options() -> None:
    config = load_config("digits_llr_adv", ["task.options.llr={lam: 2.0, mu: 0.3, steps: 1}"])
    task = build_task(config.task)
    assert isinstance(task, PGDTask) and task.llr == LLRTerm(lam=2.0, mu=0.3, steps=1)
    plain = build_task(load_config("digits_llr_adv").task)
    assert isinstance(plain, PGDTask)
    assert plain.passes_per_step().forward_backward + 3 == task.passes_per_step().forward_backward


def test_a_bad_term_is_one_cli_error_and_writes_nothing(
        tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    err = train_override_error(tmp_path, capsys, "task.options.llr={lam: -1}")
    assert err == "llrnet train: error: llr.lam and llr.mu must be >= 0, got -1.0, 0.03\n"
