"""AutoAttack through the authors' package: class counts, seeds, its checks, llrnet's warnings."""

from __future__ import annotations

import importlib
import warnings
from typing import Any

import pytest
import torch
from torch import Tensor, nn

from llrnet.attacks import PGD
from llrnet.attacks.autoattack import INSTALL, AutoAttack, attacks_for, flag_kind
from llrnet.core.errors import UsageError
from llrnet.eval import checks, get_suite


def test_targeted_attacks_fit_the_class_count() -> None:
    assert attacks_for("standard", 10) == (["apgd-ce", "apgd-t", "fab-t", "square"], 9)
    assert attacks_for("standard", 100) == (["apgd-ce", "apgd-t", "fab-t", "square"], 9)
    assert attacks_for("standard", 4) == (["apgd-ce", "apgd-t", "fab-t", "square"], 3)
    assert attacks_for("standard", 3) == (["apgd-ce", "fab-t", "square"], 2)
    assert attacks_for("standard", 2) == (["apgd-ce", "fab-t", "square"], 1)
    assert attacks_for("rand", 3) == (["apgd-ce", "apgd-dlr"], 2)
    assert attacks_for("rand", 2) == (["apgd-ce"], 1)
    with pytest.raises(UsageError):
        attacks_for("standard", 1)


def test_without_the_extra_the_error_names_the_install_command(
        monkeypatch: pytest.MonkeyPatch) -> None:
    real = importlib.import_module

    def fake(name: str, *args: Any) -> Any:
        if name == "pyautoattack":
            raise ImportError("no module named pyautoattack")
        return real(name, *args)

    monkeypatch.setattr(importlib, "import_module", fake)
    x, y = torch.rand(2, 1, 4, 4), torch.tensor([0, 1])
    with pytest.raises(UsageError, match=INSTALL.replace("[", r"\[").replace("]", r"\]")):
        AutoAttack(0.1)(nn.Sequential(nn.Flatten(), nn.Linear(16, 2)), x, y)


def test_linf_runs_autoattack_only_when_asked() -> None:
    suite = get_suite("linf", eps=0.1)
    assert suite.select(None).names == ["clean", "pgd"]
    assert suite.select(["autoattack", "autoattack_rand"]).names == ["autoattack",
                                                                      "autoattack_rand"]
    entry = suite.select(["autoattack"]).entries[0]
    assert isinstance(entry.attack, AutoAttack) and entry.attack.eps == 0.1
    assert entry.kind == "white_box"


def test_flag_kinds_are_told_from_the_authors_messages() -> None:
    assert flag_kind("it seems to be a randomized defense! Please use version=\"rand\".") \
        == "randomized"
    assert flag_kind("there are 3 points with zero gradient! This might") == "zero_gradients"
    assert flag_kind("it seems that the output is a probability distribution, please be") \
        == "probabilities"


def test_pgd_far_above_autoattack_warns_once_per_pair() -> None:
    attacks = {"pgd": PGD(0.1, 5, 0.05), "autoattack": AutoAttack(0.1)}
    records = {"pgd": {"accuracy@100": 0.80, "images": 50},
               "autoattack": {"accuracy@100": 0.70, "images": 50}}
    with pytest.warns(checks.EvaluationWarning, match="gradient masking"):
        found = checks.check_autoattack(attacks, records, [])
    assert len(found) == 1
    records["autoattack"]["accuracy@100"] = 0.79  # within 2 points: fine
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        assert checks.check_autoattack(attacks, records, []) == []


pyautoattack = pytest.importorskip("pyautoattack", reason="needs the extra llrnet[autoattack]")


class Linear(nn.Module):
    """A fixed linear two-class model on 1x4x4 images (margin = w . x - 0.5 |w|_1)."""

    def __init__(self, probabilities: bool = False) -> None:
        super().__init__()
        self.fc = nn.Linear(16, 2)
        with torch.no_grad():
            self.fc.weight.copy_(torch.stack([-torch.ones(16), torch.ones(16)]) / 16)
            self.fc.bias.zero_()
        self.probabilities = probabilities

    def forward(self, x: Tensor) -> Tensor:
        logits = 8 * (self.fc(x.flatten(1)) - self.fc(torch.full_like(x, 0.5).flatten(1)))
        return logits.softmax(dim=1) if self.probabilities else logits


def images() -> tuple[Tensor, Tensor]:
    g = torch.Generator().manual_seed(0)
    y = torch.tensor([0, 1, 0, 1, 1, 0])
    # Class 1 images are brighter than 0.5 by 0.1 on average, class 0 darker.
    x = (0.5 + (2 * y.float() - 1).view(-1, 1, 1, 1) * 0.1
         + 0.02 * torch.randn(6, 1, 4, 4, generator=g)).clamp(0, 1)
    return x, y


def test_autoattack_breaks_the_linear_model_inside_the_ball() -> None:
    x, y = images()
    model = Linear()
    assert (model(x).argmax(1) == y).all()
    before = torch.random.get_rng_state()
    attack = AutoAttack(0.2)  # above the margin of every image: all broken by APGD-CE
    x_adv = attack(model, x, y, seeds=0)
    assert torch.equal(torch.random.get_rng_state(), before)  # the caller's stream untouched
    assert (x_adv - x).abs().max() <= 0.2 + 1e-6
    assert (model(x_adv).argmax(1) != y).all()
    assert torch.equal(attack(model, x, y, seeds=0), x_adv)  # same seeds, same result
    assert attack.last_stats["model_evaluations"] > 0


@pytest.mark.slow  # Square's 5,000 queries run on the robust images (~30 s on a CPU)
def test_a_small_ball_leaves_the_linear_model_robust() -> None:
    x, y = images()
    model = Linear()
    x_adv = AutoAttack(0.02)(model, x, y, seeds=0)  # below every image's margin
    assert (model(x_adv).argmax(1) == y).all()


def test_the_authors_checks_become_llrnet_warnings_once() -> None:
    x, y = images()
    attack = AutoAttack(0.2)
    with warnings.catch_warnings():
        warnings.simplefilter("error")  # nothing is shown during the attack
        attack(Linear(probabilities=True), x, y, seeds=0)
        attack(Linear(probabilities=True), x, y, seeds=1)
    assert "probabilities" in attack.flags
    records = {"autoattack": {"accuracy@100": 0.0, "images": 6}}
    with pytest.warns(checks.EvaluationWarning, match="AutoAttack's own check") as caught:
        found = checks.check_autoattack({"autoattack": attack}, records, [])
    assert len(found) == len(attack.flags) == len(caught)
    # llrnet's own check already said so: not repeated.
    ours = [f"{checks.PROBABILITIES} (each row ...)"]
    remaining = {k for k in attack.flags if k != "probabilities"}
    assert len(checks.check_autoattack({"autoattack": attack}, records, ours)) == len(remaining)


def test_evaluate_reports_a_weak_pgd_and_the_authors_checks_once(tmp_path: Any) -> None:
    import json

    from llrnet.attacks import Identity
    from llrnet.eval import Suite, SuiteEntry, evaluate

    x, y = images()
    suite = Suite(name="t", entries=(
        SuiteEntry("clean", Identity()),
        SuiteEntry("weak_pgd", PGD(0.2, 1, 0.001, random_start=False)),  # barely moves
        SuiteEntry("autoattack", AutoAttack(0.2)),
    ), batch_size=3)
    with pytest.warns(checks.EvaluationWarning) as caught:
        records = evaluate(Linear(probabilities=True), suite, (x, y), out_dir=tmp_path / "o",
                           progress=False)
    assert records["weak_pgd"]["accuracy@100"] == 1.0
    assert records["autoattack"]["accuracy@100"] == 0.0
    found = json.loads((tmp_path / "o" / "results.json").read_text())["warnings"]
    assert sum("too weak" in w for w in found) == 1
    # Probability outputs: llrnet's own check says it; AutoAttack's same check is not repeated
    # (two chunks both flagged it).
    assert sum("probabilit" in w for w in found) == 1
    assert len(caught) == len(found)


def test_bad_arguments_are_usage_errors_naming_the_choices() -> None:
    with pytest.raises(UsageError, match=r"AutoAttack version must be one of \['standard', "
                                         r"'rand'\], got 'fast'"):
        AutoAttack(0.1, version="fast")
    from llrnet.attacks import LinfBall

    class L1Ball(LinfBall):  # a user's own ball with a norm AutoAttack lacks
        norm = "l1"

    with pytest.raises(UsageError, match=r"AutoAttack supports the norms \['l2', 'linf'\], "
                                         r"got 'l1'"):
        AutoAttack(L1Ball(0.1))
    with pytest.raises(UsageError, match="AutoAttack needs a model with >= 2 logits, got 1"):
        attacks_for("standard", 1)
