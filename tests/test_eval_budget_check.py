"""``evaluate(check_budget=K)``: an attack re-run at K times its budget on the images it
left correct, with the same per-image seeds; NOT CONVERGED flagged, resumable."""

from __future__ import annotations

import json
import warnings
from pathlib import Path
from typing import Any

import numpy as np
import pytest
import torch
from torch import Tensor, nn

from llrnet.attacks import Attack, Identity
from llrnet.attacks.parts import ImageRng
from llrnet.core.errors import UsageError
from llrnet.eval import EvaluationWarning, Suite, SuiteEntry, evaluate, format_table
from llrnet.eval.checks import check_budgets
from llrnet.eval.metrics import budget_check
from llrnet.eval.seeds import image_seed
from test_eval_runner import tiny_data, tiny_model

KILL: dict[str, int | None] = {"at": None}
"""Set ``at`` to n: the n-th call of a scaled stub raises (a kill mid-recheck)."""


class Patience(Attack):
    """A black-box oracle that breaks image i only with budget: after ``needs(seed_i)``
    steps it returns the image mirrored left-right (the tiny oracle's wrong class),
    earlier it returns it unchanged. ``calls`` (shared by scaled copies) records
    ``(steps, seeds)`` of every call."""

    kind = "black_box"

    def __init__(self, steps: int, needs: Any, calls: list[tuple[int, list[int]]]) -> None:
        super().__init__()
        self.name = "patience"
        self.steps = steps
        self.needs = needs
        self.calls = calls

    def budget(self) -> dict[str, int]:
        return {"steps": self.steps}

    def _scaled(self, factor: int) -> Patience:
        return self._replace(steps=self.steps * factor)

    def _run(self, model: nn.Module, x: Tensor, y: Tensor, rng: ImageRng,
             pool: object) -> Tensor:
        self.calls.append((self.steps, list(rng.seeds)))
        if KILL["at"] is not None and self.steps > 2 and \
                sum(steps > 2 for steps, _ in self.calls) == KILL["at"]:
            raise RuntimeError("killed")
        model(x)  # one evaluation per image
        broken = torch.tensor([self.needs(s) <= self.steps for s in rng.seeds])
        return torch.where(broken[:, None, None, None], x.flip(-1), x)


def needs_by_seed(seed: int) -> int:
    """1 to 8 steps, from the image's seed."""
    return 1 + seed % 8


def setup(needs: Any = needs_by_seed, steps: int = 2
          ) -> tuple[Suite, list[tuple[int, list[int]]]]:
    calls: list[tuple[int, list[int]]] = []
    entries = (SuiteEntry("patience", Patience(steps, needs, calls)),)
    return Suite("s", entries, batch_size=4), calls


def untimed(value: Any) -> Any:
    if isinstance(value, dict):
        return {k: untimed(v) for k, v in value.items() if k != "wall_time"}
    if isinstance(value, list):
        return [untimed(v) for v in value]
    return value


def robust_at(steps: int, seed: int = 0, n: int = 24) -> list[int]:
    return [i for i in range(n) if needs_by_seed(image_seed(seed, "patience", i)) > steps]


def test_a_budget_dependent_oracle_is_not_converged(tmp_path: Path) -> None:
    suite, calls = setup()
    with pytest.warns(EvaluationWarning, match=r"NOT CONVERGED: patience \(accuracy@80"):
        results = evaluate(tiny_model(), suite, tiny_data(), out_dir=tmp_path, progress=False,
                           check_budget=4, check_budget_images=5)
    record = results["patience"]
    robust = robust_at(2)
    assert len(robust) > 5  # the cap matters
    check = record["budget_check"]
    assert check["factor"] == 4
    assert check["budget"] == {"steps": 2} and check["scaled_budget"] == {"steps": 8}
    assert check["robust_images"] == len(robust)
    assert check["indices"] == robust[:5]  # the first 5 of the evaluation order
    assert check["images"] == 5
    # With 8 steps every image breaks (needs <= 8): all five flip.
    assert check["flipped"] == robust[:5]
    assert check["accuracy"] == 1.0 and check["scaled_accuracy"] == 0.0
    assert not check["converged"]
    assert check["scaled_accuracy@80"] < check["accuracy@80"] == record["accuracy@80"]
    assert check["model_evaluations"] == 5
    # Paired: the recheck saw the entry's own per-image seeds for those images.
    scaled_seeds = [s for steps, seeds in calls if steps == 8 for s in seeds]
    assert scaled_seeds == [image_seed(0, "patience", i) for i in robust[:5]]
    table = format_table(results)
    assert "budget check" in table.splitlines()[0]
    assert "NOT CONVERGED (x4)" in table
    saved = json.loads((tmp_path / "results.json").read_text())
    assert saved["attacks"]["patience"]["budget_check"]["flipped"] == robust[:5]
    assert sum("NOT CONVERGED" in w for w in saved["warnings"]) == 1


def test_an_attack_that_more_budget_does_not_help_is_converged(tmp_path: Path) -> None:
    def needs(seed: int) -> int:
        return 1 if seed % 2 else 100  # out of reach of 2 x 4 steps

    suite, _ = setup(needs)
    with warnings.catch_warnings():
        warnings.simplefilter("error", EvaluationWarning)
        results = evaluate(tiny_model(), suite, tiny_data(), out_dir=tmp_path, progress=False,
                           check_budget=4)
    check = results["patience"]["budget_check"]
    assert check["converged"] and check["flipped"] == []
    assert check["images"] == min(32, check["robust_images"])
    assert check["scaled_accuracy@80"] == check["accuracy@80"]
    assert "converged (x4)" in format_table(results)


def test_no_check_without_the_option_or_without_a_budget(tmp_path: Path) -> None:
    suite, calls = setup()
    results = evaluate(tiny_model(), suite, tiny_data(), out_dir=tmp_path / "a", progress=False)
    assert "budget_check" not in results["patience"]
    assert {steps for steps, _ in calls} == {2}
    assert "budget check" not in format_table(results)
    results = evaluate(tiny_model(), [Identity()], tiny_data(), out_dir=tmp_path / "b",
                       progress=False, check_budget=4)
    assert "budget_check" not in results["clean"]


def test_killed_mid_recheck_then_resumed_equals_an_uninterrupted_run(tmp_path: Path) -> None:
    options = {"progress": False, "check_budget": 4, "check_budget_images": 9}
    suite, _ = setup()
    evaluate(tiny_model(), suite, tiny_data(), out_dir=tmp_path / "straight", **options)
    KILL["at"] = 2
    try:
        suite, calls = setup()
        with pytest.raises(RuntimeError, match="killed"):
            evaluate(tiny_model(), suite, tiny_data(), out_dir=tmp_path / "killed", **options)
    finally:
        KILL["at"] = None
    state = tmp_path / "killed" / "state" / "patience.check_budget"
    assert [p.name for p in state.glob("chunk_*")] == ["chunk_00000.safetensors"]
    suite, calls = setup()
    evaluate(tiny_model(), suite, tiny_data(), out_dir=tmp_path / "killed", **options)
    # Only the missing recheck chunks ran (9 images, chunks of 4: 2 of 3 left).
    assert [steps for steps, _ in calls] == [8, 8]
    straight = json.loads((tmp_path / "straight" / "results.json").read_text())
    resumed = json.loads((tmp_path / "killed" / "results.json").read_text())
    assert untimed(resumed) == untimed(straight)


def test_the_factor_and_the_cap_are_part_of_the_resume_fingerprint(tmp_path: Path) -> None:
    evaluate(tiny_model(), setup()[0], tiny_data(), out_dir=tmp_path, progress=False,
             check_budget=4)
    manifest = json.loads((tmp_path / "state" / "manifest.json").read_text())
    assert manifest["check_budget"] == {"factor": 4, "images": 32}
    with pytest.raises(UsageError, match=r"different arguments.*check_budget"):
        evaluate(tiny_model(), setup()[0], tiny_data(), out_dir=tmp_path, progress=False,
                 check_budget=2)
    with pytest.raises(UsageError, match=r"different arguments.*check_budget"):
        evaluate(tiny_model(), setup()[0], tiny_data(), out_dir=tmp_path, progress=False,
                 check_budget=4, check_budget_images=8)
    with pytest.raises(UsageError, match=r"different arguments.*check_budget"):
        evaluate(tiny_model(), setup()[0], tiny_data(), out_dir=tmp_path, progress=False)


@pytest.mark.parametrize(("option", "value"), [("check_budget", 0), ("check_budget", 1.5),
                                               ("check_budget_images", 0)])
def test_bad_check_options(tmp_path: Path, option: str, value: Any) -> None:
    with pytest.raises(UsageError, match=f"{option} must be an integer >= 1"):
        evaluate(tiny_model(), setup()[0], tiny_data(), out_dir=tmp_path, progress=False,
                 **{option: value})
    assert not (tmp_path / "state").exists()


def _logits(margins: list[float]) -> np.ndarray:
    """Two-class logits [-m/2, m/2]: class 1 with confidence m/2 when m > 0."""
    m = np.asarray(margins, dtype=np.float64)
    return np.stack([-m / 2, m / 2], axis=1)


@pytest.mark.parametrize(("n", "flips", "converged"),
                         [(10, 1, True), (10, 2, False), (100, 1, True), (100, 2, False)])
def test_the_tolerance_is_two_points_or_one_image(n: int, flips: int, converged: bool) -> None:
    # n images, all right (label 1), confidences n, n-1, ..., 1: 80% covers int(0.8 n).
    margins = [2.0 * (n - i) for i in range(n)]
    labels = np.ones(n, dtype=np.int64)
    indices = np.arange(100, 100 + n)
    rechecked = indices[:5]
    # The first ``flips`` rechecked images turn wrong at the same confidence.
    scaled = _logits(margins[:5])
    scaled[:flips] = scaled[:flips, ::-1]
    check = budget_check(_logits(margins), labels, indices, scaled, rechecked)
    covered = int(0.8 * n)
    assert check["accuracy@80"] == 1.0
    assert check["scaled_accuracy@80"] == pytest.approx(1 - flips / covered)
    assert check["tolerance"] == max(0.02, 1 / covered)  # 10 images: 1/8; 100: 2 points
    assert check["converged"] is converged
    assert check["flipped"] == list(range(100, 100 + flips))
    assert (check["accuracy"], check["scaled_accuracy"]) == (1.0, 1 - flips / 5)


def test_one_warning_line_names_every_unconverged_attack() -> None:
    def record(converged: bool) -> dict[str, Any]:
        return {"budget_check": {"converged": converged, "accuracy@80": 0.75,
                                 "scaled_accuracy@80": 0.5, "factor": 4, "flipped": [3, 7],
                                 "images": 10}}

    with pytest.warns(EvaluationWarning) as caught:
        found = check_budgets({"a": record(False), "b": record(True), "c": record(False)})
    assert len(found) == len(caught) == 1 and "\n" not in found[0]
    assert found[0].startswith("NOT CONVERGED: a (accuracy@80 75.0% -> 50.0% at 4x its "
                               "budget; 2 of 10 rechecked images flipped); c (")
    assert "'b'" not in found[0] and " b (" not in found[0]
