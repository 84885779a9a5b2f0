"""Every public entry point that runs a caller's model returns it exactly as given: the mode of
every submodule, every parameter's requires_grad, and every tensor's value."""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest
import torch
from PIL import Image
from torch import nn

from llrnet.attacks import PGD, SPSA, Identity, white_box_bound
from llrnet.core.modes import kept_as_given
from llrnet.eval import evaluate
from llrnet.eval.suites import Suite, SuiteEntry
from llrnet.inference import predict_images
from llrnet.models import as_model_fn, create_model
from llrnet.train.config import EvalConfig
from llrnet.train.validation import robust_accuracy


def given_model() -> nn.Module:
    """A tiny bird-or-bicycle classifier in a mixed state: training mode with its trunk's
    final batch norm in eval mode and the linear head frozen (requires_grad False)."""
    torch.manual_seed(0)
    model = create_model("llr_pretrain_adv_tiny")
    model.train()
    model.trunk.final_bn.eval()
    for parameter in model.linear.parameters():
        parameter.requires_grad_(False)
    return model


def snapshot(model: nn.Module) -> tuple[list[tuple[str, bool]], list[tuple[str, bool]],
                                        dict[str, torch.Tensor]]:
    modes = [(name, module.training) for name, module in model.named_modules()]
    grads = [(name, p.requires_grad) for name, p in model.named_parameters()]
    values = {name: t.detach().clone() for name, t in model.state_dict().items()}
    return modes, grads, values


def assert_as_given(model: nn.Module, before: Any) -> None:
    modes, grads, values = snapshot(model)
    assert modes == before[0]
    assert grads == before[1]
    assert values.keys() == before[2].keys()
    for name, value in values.items():
        assert torch.equal(value, before[2][name]), name


def images(n: int = 4) -> tuple[torch.Tensor, torch.Tensor]:
    generator = torch.Generator().manual_seed(1)
    return torch.rand(n, 3, 32, 32, generator=generator), torch.tensor([0, 1] * (n // 2))


def bird_probability_of(model: nn.Module, x: torch.Tensor) -> torch.Tensor:
    with torch.no_grad(), kept_as_given(model):
        model.eval()
        return model.bird_probability(x)


def run_evaluate(model: nn.Module, tmp_path: Path) -> None:
    suite = Suite("t", (SuiteEntry("clean", Identity(), kind="clean"),
                        SuiteEntry("pgd", PGD(0.03, 2, 0.02), kind="white_box")), batch_size=2)
    evaluate(model, suite, images(), out_dir=tmp_path / "eval", progress=False)


def run_evaluate_failing(model: nn.Module, tmp_path: Path) -> None:
    with pytest.raises(Exception, match="broken"):
        evaluate(model, Suite("t", (SuiteEntry("x", Broken(), kind="clean"),), batch_size=2),
                 images(), out_dir=tmp_path / "fail", progress=False)


class Broken:
    """An attack that switches the model to train mode and then fails."""

    name = "broken"

    def __call__(self, model: nn.Module, x: torch.Tensor, y: torch.Tensor,
                 **_: Any) -> torch.Tensor:
        model.train()
        raise RuntimeError("broken")


def run_attack(model: nn.Module, _: Path) -> None:
    x, y = images()
    PGD(0.03, 2, 0.02)(model, x, y, seeds=0)


def run_bound(model: nn.Module, _: Path) -> None:
    x, y = images()
    bound = white_box_bound(SPSA(0.03, 1, samples=2))
    assert bound is not None
    bound(model, x, y, seeds=0)


def run_predict(model: nn.Module, tmp_path: Path) -> None:
    path = tmp_path / "a.png"
    Image.new("RGB", (40, 30), (120, 30, 200)).save(path)
    predictions, failures = predict_images(model, [path])
    assert len(predictions) == 1 and not failures


def run_model_fn(model: nn.Module, _: Path) -> None:
    function = as_model_fn(model, batch_size=2)
    assert function(images()[0].permute(0, 2, 3, 1).numpy()).shape == (4, 2)


def run_robust_accuracy(model: nn.Module, _: Path) -> None:
    x, y = images()
    robust_accuracy(model, x, y, EvalConfig(eps=0.03, steps=1, batch_size=2),
                    device=torch.device("cpu"))


def run_bird_probability(model: nn.Module, _: Path) -> None:
    # A method of the model, run as forward is: in the mode it is in (a train-mode
    # forward updates batch-norm statistics, as in torch), so the test gives it in eval.
    with torch.no_grad():
        model.bird_probability(images()[0])


ENTRY_POINTS: dict[str, Callable[[nn.Module, Path], None]] = {
    "evaluate": run_evaluate,
    "evaluate (failing attack)": run_evaluate_failing,
    "attack __call__": run_attack,
    "white_box_bound": run_bound,
    "predict_images": run_predict,
    "as_model_fn": run_model_fn,
    "robust_accuracy": run_robust_accuracy,
    "bird_probability": run_bird_probability,
}


@pytest.mark.parametrize("name", sorted(ENTRY_POINTS))
def test_the_model_comes_back_as_given(name: str, tmp_path: Path) -> None:
    model = given_model()
    if name == "bird_probability":
        model.eval()
    x = images()[0]
    probability = bird_probability_of(model, x)
    before = snapshot(model)
    ENTRY_POINTS[name](model, tmp_path)
    assert_as_given(model, before)
    # The symptom: P(bird) of an image moved after one evaluate() call.
    assert torch.equal(bird_probability_of(model, x), probability)


def test_kept_as_given_restores_modes_and_grads() -> None:
    model = given_model()
    before = snapshot(model)
    with kept_as_given(model):
        model.eval()
        for parameter in model.parameters():
            parameter.requires_grad_(True)
    assert_as_given(model, before)
    with kept_as_given("a numpy model_fn"):  # anything else passes through
        pass
