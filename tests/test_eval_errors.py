"""Error paths of llrnet.eval: each bad input gets a clear, specific message."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import numpy as np
import pytest
import torch
from torch import Tensor, nn

from llrnet.attacks import PGD, Identity
from llrnet.core.errors import InputError, UsageError
from llrnet.eval import Suite, SuiteEntry, accuracy_at_coverage, evaluate, get_suite


def test_metric_rejects_bad_shapes() -> None:
    with pytest.raises(InputError, match=r"logits must have shape \(N, K\)"):
        accuracy_at_coverage(np.zeros(5), np.zeros(5, dtype=int), 0.8)
    with pytest.raises(InputError, match="labels must have shape"):
        accuracy_at_coverage(np.zeros((5, 2)), np.zeros(4, dtype=int), 0.8)
    with pytest.raises(InputError, match="empty"):
        accuracy_at_coverage(np.zeros((0, 2)), np.zeros(0, dtype=int), 0.8)


def test_metric_rejects_bad_values() -> None:
    with pytest.raises(InputError, match="coverage must be in"):
        accuracy_at_coverage(np.zeros((3, 2)), np.zeros(3, dtype=int), 1.5)
    with pytest.raises(InputError, match="NaN"):
        accuracy_at_coverage(np.full((3, 2), np.nan), np.zeros(3, dtype=int), 0.8)
    with pytest.raises(InputError, match="labels must be integers"):
        accuracy_at_coverage(np.zeros((3, 2)), np.zeros(3), 0.8)


def test_unknown_suite_lists_choices() -> None:
    with pytest.raises(UsageError, match=r"unknown suite 'nope'; valid names: .*linf"):
        get_suite("nope")


def test_unknown_suite_option() -> None:
    with pytest.raises(UsageError, match=r"suite 'linf' takes no argument.*epsilon; valid: .*eps"):
        get_suite("linf", epsilon=0.1)


def test_unknown_attack_selection() -> None:
    with pytest.raises(UsageError, match=r"unknown attack.*spsa.*choose from clean, pgd"):
        get_suite("linf").select(["spsa"])


# --- the runner rejects bad models and arguments before any attack runs --------------


class Recording:
    """An attack that records whether it ran."""

    name = "clean"

    def __init__(self) -> None:
        self.inner = Identity()
        self.calls = 0
        self.last_stats: dict[str, float] = {}

    def __call__(self, model: nn.Module, x: Tensor, y: Tensor, **kwargs: Any) -> Tensor:
        self.calls += 1
        return self.inner(model, x, y, **kwargs)


def _data() -> tuple[Tensor, Tensor]:
    return torch.rand(6, 3, 8, 8), torch.tensor([0, 1, 0, 1, 0, 1])


@pytest.mark.parametrize(
    ("output", "message"),
    [
        (lambda n: np.zeros((n, 2), dtype=np.float64), "must return float32 logits, got float64"),
        (lambda n: np.zeros((n, 3), dtype=np.float32), r"must return shape \(4, 2\).*got \(4, 3\)"),
        (lambda n: np.full((n, 2), np.nan, dtype=np.float32), "NaN or infinite logits for 4 of 4"),
        (lambda n: torch.zeros(n, 2), "must return a numpy array, got a torch.Tensor"),
    ],
)
def test_bad_model_fn_is_rejected_before_attacks(tmp_path: Path, output: Any,
                                                 message: str) -> None:
    attack = Recording()
    suite = Suite("s", (SuiteEntry("clean", attack, kind="clean"),), batch_size=4)
    with pytest.raises(InputError, match=message):
        evaluate(lambda x: output(len(x)), suite, _data(), out_dir=tmp_path, progress=False)
    assert attack.calls == 0
    assert not (tmp_path / "state").exists()


def test_bad_module_output_is_rejected(tmp_path: Path) -> None:
    suite = Suite("s", (SuiteEntry("clean", Identity(), kind="clean"),))
    with pytest.raises(InputError, match=r"logits of shape \[6, K\]"):
        evaluate(nn.Flatten(0), suite, _data(), out_dir=tmp_path, progress=False)
    nan_model = nn.Sequential(nn.Flatten(), nn.Linear(192, 2))
    with torch.no_grad():
        nan_model[1].bias.fill_(float("nan"))
    with pytest.raises(InputError, match="NaN or infinite logits for 6 of 6"):
        evaluate(nan_model, suite, _data(), out_dir=tmp_path, progress=False)
    one_class = nn.Sequential(nn.Flatten(), nn.Linear(192, 1))
    with pytest.raises(InputError, match="K >= 2"):
        evaluate(one_class, suite, _data(), out_dir=tmp_path, progress=False)


def test_white_box_attack_on_model_fn_is_an_error(tmp_path: Path) -> None:
    suite = Suite("s", (SuiteEntry("pgd", PGD(0.1, 2, 0.05), kind="white_box"),))
    with pytest.raises(UsageError, match=r"pgd need gradients.*numpy model_fn"):
        evaluate(lambda x: np.zeros((len(x), 2), np.float32), suite, _data(),
                 out_dir=tmp_path, progress=False)


def test_bad_runner_arguments(tmp_path: Path) -> None:
    model = nn.Sequential(nn.Flatten(), nn.Linear(192, 2))
    with pytest.raises(UsageError, match="batch_size must be an integer >= 1"):
        evaluate(model, "linf", _data(), out_dir=tmp_path, batch_size=0)
    with pytest.raises(InputError, match="max_images must be >= 1"):
        evaluate(model, "linf", _data(), out_dir=tmp_path, max_images=0)
    with pytest.raises(InputError, match="images must lie in \\[0, 1\\]"):
        evaluate(model, "linf", (torch.full((2, 3, 8, 8), 255.0), torch.tensor([0, 1])),
                 out_dir=tmp_path)
    with pytest.raises(InputError, match="dataset must be a torch Dataset"):
        evaluate(model, "linf", [1, 2, 3], out_dir=tmp_path)
    with pytest.raises(UsageError, match=r"model must be a torch\.nn\.Module or a numpy model_fn"):
        evaluate("resnet", "linf", _data(), out_dir=tmp_path)
    with pytest.raises(UsageError, match="unknown attack"):
        evaluate(model, "linf", _data(), out_dir=tmp_path, attacks=["spatial_grid"])


def test_model_that_cannot_take_the_images(tmp_path: Path) -> None:
    wrong_size = nn.Sequential(nn.Flatten(), nn.Linear(5, 2))
    suite = Suite("s", (SuiteEntry("clean", Identity(), kind="clean"),))
    with pytest.raises(InputError, match=r"failed on the first batch \(images \[6, 3, 8, 8\]\)"):
        evaluate(wrong_size, suite, _data(), out_dir=tmp_path, progress=False)
