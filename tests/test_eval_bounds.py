"""White-box bounds in ``evaluate``: the bound of a black-box entry on a linear oracle
whose answer is known, its seeds, the skip note, the 10-point check, suite defaults."""

from __future__ import annotations

import json
import warnings
from pathlib import Path
from typing import Any

import numpy as np
import pytest
import torch
from torch import Tensor, nn

from llrnet.attacks import PGD, SPSA, Chain, Identity, RandomSpatial
from llrnet.attacks.parts import ImageRng
from llrnet.core.errors import UsageError
from llrnet.eval import (
    EvaluationWarning,
    Suite,
    SuiteEntry,
    accuracy_at_coverage,
    evaluate,
    format_table,
    get_suite,
)
from llrnet.eval.checks import check_white_box_bounds
from test_eval_runner import tiny_data, tiny_model

EPS = 0.1
LEVELS = [0.2, 0.3, 0.45, 0.47, 0.53, 0.56, 0.7, 0.8, 0.25, 0.75]
"""Grey levels of the images: at L-inf distance |v - 0.5| from the boundary, so those
within 0.05 (four) flip under eps 0.1 and those 0.2 or more away (six) never do."""


class Brightness(nn.Module):
    """Logits ``[-s, s] / 2`` with ``s = sum(x) - 8`` on 1 x 4 x 4 images: class 1 iff the
    mean exceeds 0.5; an L-inf step of eps moves ``s`` by 16 eps at most."""

    def forward(self, x: Tensor) -> Tensor:
        score = x.flatten(1).sum(dim=1) - 8.0
        return torch.stack([-score / 2, score / 2], dim=1)


def grey_data() -> tuple[Tensor, Tensor]:
    levels = torch.tensor(LEVELS)
    return levels[:, None, None, None].expand(-1, 1, 4, 4).clone(), (levels > 0.5).long()


def weak_spsa() -> SPSA:
    """SPSA in the L-inf ball of radius EPS with a budget too small to move anything."""
    return SPSA(eps=EPS, steps=1, samples=2, lr=1e-9, random_start=False)


def spsa_suite(bounds: bool = True) -> Suite:
    return Suite("s", (SuiteEntry("clean", Identity()), SuiteEntry("spsa", weak_spsa())),
                 batch_size=4, white_box_bounds=bounds)


def test_the_bound_is_the_exact_answer_of_a_linear_oracle(tmp_path: Path) -> None:
    images, labels = grey_data()
    with pytest.warns(EvaluationWarning, match=r"'spsa' leaves accuracy@80 100\.0%, its "
                      r"white-box bound in the same ball 75\.0%"):
        results = evaluate(Brightness(), spsa_suite(), (images, labels), out_dir=tmp_path,
                           progress=False)
    assert results["spsa"]["accuracy@100"] == 1.0  # the weak black box moves nothing
    bound = results["spsa"]["white_box_bound"]
    near = [i for i, v in enumerate(LEVELS) if abs(v - 0.5) < EPS]
    assert near == [2, 3, 4, 5]
    assert bound["accuracy@100"] == 0.6 and bound["error_indices"] == near
    # PGD ends in the corner: every pixel eps towards the other class.
    towards = torch.where(labels == 1, -EPS, EPS)[:, None, None, None]
    expected = Brightness()((images + towards).clamp(0, 1)).detach()
    assert bound["accuracy@80"] == accuracy_at_coverage(expected, labels, 0.8) == 0.75
    assert bound["kind"] == "white_box" and bound["images"] == 10
    assert bound["model_evaluations"] == 100 * 10  # 100 steps, one restart
    assert "white_box_bound" not in results["clean"]  # no black-box attack, no bound
    rows = format_table(results).splitlines()
    assert rows[3].startswith("spsa ") and rows[4].startswith("spsa (white-box bound)")
    assert rows[4].split()[3:5] == [f"{100 * bound['accuracy@80']:.1f}", "60.0"]
    saved = json.loads((tmp_path / "results.json").read_text())
    assert saved["attacks"]["spsa"]["white_box_bound"]["error_indices"] == near
    assert saved["order"] == ["clean", "spsa"]
    manifest = json.loads((tmp_path / "state" / "manifest.json").read_text())
    assert manifest["white_box_bounds"]["spsa"]["class"] == "PGD"
    assert (tmp_path / "state" / "spsa.white_box_bound").is_dir()


def test_the_apgd_ce_bound_gives_the_same_exact_answer(tmp_path: Path) -> None:
    """``bound_attack="apgd-ce"``: the authors' APGD-CE in SPSA's ball finds exactly the
    images PGD finds on the linear oracle, and the fingerprint names it."""
    pytest.importorskip("pyautoattack")
    images, labels = grey_data()
    with pytest.warns(EvaluationWarning, match="white-box bound in the same ball 75.0%"):
        results = evaluate(Brightness(), spsa_suite(), (images, labels), out_dir=tmp_path,
                           progress=False, bound_attack="apgd-ce")
    bound = results["spsa"]["white_box_bound"]
    assert bound["accuracy@100"] == 0.6 and bound["error_indices"] == [2, 3, 4, 5]
    manifest = json.loads((tmp_path / "state" / "manifest.json").read_text())
    assert manifest["white_box_bounds"]["spsa"]["class"] == "APGDCE"
    with pytest.raises(UsageError, match=r"different arguments.*white_box_bounds"):
        evaluate(Brightness(), spsa_suite(), (images, labels), out_dir=tmp_path,
                 progress=False)  # PGD bounds cannot resume an APGD-CE run
    with pytest.raises(UsageError, match="bound_attack must be one of pgd, apgd-ce, got 'x'"):
        evaluate(Brightness(), spsa_suite(), (images, labels), out_dir=tmp_path / "b",
                 progress=False, bound_attack="x")


def test_bounds_follow_the_suite_unless_overridden(tmp_path: Path) -> None:
    data = grey_data()
    with warnings.catch_warnings():
        warnings.simplefilter("error", EvaluationWarning)
        off = evaluate(Brightness(), spsa_suite(bounds=False), data, out_dir=tmp_path / "a",
                       progress=False)
        forced_off = evaluate(Brightness(), spsa_suite(), data, out_dir=tmp_path / "b",
                              progress=False, white_box_bounds=False)
    assert "white_box_bound" not in off["spsa"] and "white_box_bound" not in forced_off["spsa"]
    manifest = json.loads((tmp_path / "a" / "state" / "manifest.json").read_text())
    assert "white_box_bounds" not in manifest  # as in older states: they still resume
    with pytest.warns(EvaluationWarning):
        forced_on = evaluate(Brightness(), spsa_suite(bounds=False), data,
                             out_dir=tmp_path / "c", progress=False, white_box_bounds=True)
    assert forced_on["spsa"]["white_box_bound"]["accuracy@100"] == 0.6
    # Part of the resume fingerprint.
    with pytest.raises(UsageError, match=r"different arguments.*white_box_bounds"):
        evaluate(Brightness(), spsa_suite(), data, out_dir=tmp_path / "c", progress=False,
                 white_box_bounds=False)
    with pytest.raises(UsageError, match="white_box_bounds must be None"):
        evaluate(Brightness(), spsa_suite(), data, out_dir=tmp_path / "d", progress=False,
                 white_box_bounds="yes")


def test_suite_defaults() -> None:
    assert get_suite("digits").white_box_bounds and get_suite("linf").white_box_bounds
    assert not get_suite("bird_or_bicycle").white_box_bounds
    assert not get_suite("two_class_mnist").white_box_bounds
    assert not Suite.custom([Identity()]).white_box_bounds
    assert get_suite("digits").select(["clean"]).white_box_bounds


class RecordingSpatial(RandomSpatial):
    """A random spatial stage that records every output (shared by the entry and its bound,
    which reuses the stage object)."""

    def __init__(self) -> None:
        super().__init__(limits=(2.0, 2.0, 20.0), border=1)
        self.outputs: list[Tensor] = []

    def _run(self, model: nn.Module, x: Tensor, y: Tensor, rng: ImageRng,
             pool: Any) -> Tensor:
        out = super()._run(model, x, y, rng, pool)
        self.outputs.append(out.clone())
        return out


def test_the_bound_replays_the_entry_random_transform(tmp_path: Path) -> None:
    stage = RecordingSpatial()
    chain = Chain(stage, SPSA(eps=0.05, steps=1, samples=2))
    suite = Suite("s", (SuiteEntry("spsa_with_random_spatial", chain),), batch_size=6,
                  white_box_bounds=True)
    images, labels = tiny_data(12)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", EvaluationWarning)
        evaluate(tiny_model(), suite, (images, labels), out_dir=tmp_path, progress=False)
    # Chunks: the entry's two, then the bound's two, on the same images.
    assert len(stage.outputs) == 4
    for entry_out, bound_out in zip(stage.outputs[:2], stage.outputs[2:], strict=True):
        assert torch.equal(entry_out, bound_out)
    assert not torch.equal(stage.outputs[0], images[:6])  # the transform did something


def test_bounds_are_skipped_with_a_note_without_gradients(tmp_path: Path) -> None:
    model = Brightness()

    def model_fn(batch: np.ndarray) -> np.ndarray:
        with torch.no_grad():
            return model(torch.from_numpy(batch).permute(0, 3, 1, 2)).numpy()

    class Frozen(nn.Module):
        def forward(self, x: Tensor) -> Tensor:
            return model(x).detach()

    note = "the model is a numpy model_fn, which has no gradients"
    for name, scored, reason in (("fn", model_fn, note),
                                 ("frozen", Frozen(),
                                  "the model's logits have no gradient with respect to its "
                                  "input")):
        results = evaluate(scored, spsa_suite(), grey_data(), out_dir=tmp_path / name,
                           progress=False)
        assert results["spsa"]["white_box_bound"] == {"skipped": reason}
        assert f"(white-box bounds not run: {reason})" in format_table(results)
        assert not (tmp_path / name / "state" / "spsa.white_box_bound").exists()


@pytest.mark.parametrize(("ours", "theirs", "fires"),
                         [(0.6, 0.5, False), (0.8, 0.7, False), (0.61, 0.5, True),
                          (1.0, 0.0, True), (0.5, 0.6, False), (0.3, 0.2, False)])
def test_the_ten_point_check(ours: float, theirs: float, fires: bool) -> None:
    records = {"spsa": {"accuracy@80": ours, "white_box_bound": {"accuracy@80": theirs}},
               "skipped": {"accuracy@80": 1.0, "white_box_bound": {"skipped": "why"}},
               "clean": {"accuracy@80": 1.0}}
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        found = check_white_box_bounds(records)
    assert len(found) == len(caught) == int(fires)
    if fires:
        assert found[0] == (f"black-box attack 'spsa' leaves accuracy@80 {100 * ours:.1f}%, "
                            f"its white-box bound in the same ball {100 * theirs:.1f}%: more "
                            "than 10 points apart, so the column measures the attack's "
                            "budget, not the model; report the bound")


def test_a_bf16_run_bounds_with_the_fp32_search_copy(tmp_path: Path) -> None:
    with pytest.warns(EvaluationWarning):
        results = evaluate(Brightness(), spsa_suite(), grey_data(), out_dir=tmp_path,
                           progress=False, precision="bf16")
    bound = results["spsa"]["white_box_bound"]
    assert bound["search_precision"] == "fp32" and bound["accuracy@100"] == 0.6


def test_a_white_box_entry_has_no_bound(tmp_path: Path) -> None:
    suite = Suite("s", (SuiteEntry("pgd", PGD(EPS, 2, EPS)),), white_box_bounds=True)
    results = evaluate(Brightness(), suite, grey_data(), out_dir=tmp_path, progress=False)
    assert "white_box_bound" not in results["pgd"]
