"""``llrnet demo --quick``: trains the four models (the two-stage one in two runs), evaluates
them, writes the report; the same table from one process or two."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import torch
from PIL import Image
from safetensors.torch import load_file

from llrnet.cli import main
from llrnet.demo import MODELS, leaderboard, run_demo
from llrnet.demo.report import budget_table

pytestmark = pytest.mark.usefixtures("one_thread")


@pytest.mark.slow
def test_quick_demo_writes_the_report_and_plots_resumes_and_is_deterministic(
        tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    out = tmp_path / "demo_out"
    assert main(["demo", "--out", str(out), "--quick", "--no-progress", "--jobs", "1"]) == 0
    printed = capsys.readouterr().out
    report = (out / "report.md").read_text()
    table = (out / "table.txt").read_text().strip()
    assert table in report and table in printed  # the terminal ends with the table
    assert [line.split("|")[1].strip() for line in table.splitlines()[2:]] == [
        "standard", "pgd", "llr", "llr_adv"]
    for name, model in MODELS.items():  # each row's recipe and cost, every stage named
        line = next(x for x in report.splitlines() if x.startswith(f"- `{name}`: "))
        assert model.recipe in line and "cost not recorded" not in line
        assert all(f"`{preset}` 4 steps of" in line for preset in model.stages)
    # Stage 2 started from stage 1's weights.
    stage2 = (out / "llr_adv" / "train" / "config.yaml").read_text()
    assert str(out / "llr_adv" / "digits10_llr" / "final.safetensors") in stage2
    for image in ("risk_coverage.png", "training_curves.png", "adversarial_examples.png",
                  "spatial_worst.png"):
        assert f"]({image})" in report
        with Image.open(out / image) as png:
            assert png.format == "PNG" and png.width > 100 and png.height > 100
    for name in MODELS:
        assert (out / name / "train" / "final.safetensors").is_file()
        assert (out / name / "eval" / "results.json").is_file()
    # Every black-box column has its white-box bound, every budgeted attack its check.
    header = table.splitlines()[0]
    for attack in ("spsa_with_random_spatial", "boundary_with_random_spatial"):
        assert f"{attack} (white-box bound)" in header
    records = json.loads((out / "llr_adv" / "eval" / "results.json").read_text())["attacks"]
    assert {a for a, r in records.items() if "budget_check" in r} == {
        "spatial_grid", "spsa_with_random_spatial", "boundary_with_random_spatial", "pgd_linf"}
    assert all(r["budget_check"]["factor"] == 4 for r in records.values() if "budget_check" in r)
    assert "## Convergence check (4x budget)" in report

    # A rerun skips what is finished: the weights are not rewritten.
    stamps = {n: (out / n / "train" / "final.safetensors").stat().st_mtime_ns for n in MODELS}
    assert main(["demo", "--out", str(out), "--quick", "--no-progress", "--jobs", "1"]) == 0
    assert stamps == {n: (out / n / "train" / "final.safetensors").stat().st_mtime_ns
                      for n in MODELS}
    assert (out / "table.txt").read_text().strip() == table

    # Deterministic: a fresh run in two worker processes gives the same table and weights.
    two = run_demo(tmp_path / "two", quick=True, progress=False, jobs=2, threads=1)
    assert two.table == table
    for name in MODELS:
        a = load_file(out / name / "train" / "final.safetensors")
        b = load_file(tmp_path / "two" / name / "train" / "final.safetensors")
        assert a.keys() == b.keys() and all(torch.equal(a[k], b[k]) for k in a), name


def test_leaderboard_cells_are_accuracies_at_80_and_100() -> None:
    results = {
        "standard": {"clean": {"accuracy@80": 1.0, "accuracy@100": 0.95},
                     "pgd": {"accuracy@80": 0.125, "accuracy@100": 0.1}},
        "llr": {"clean": {"accuracy@80": 1.0, "accuracy@100": 0.9}},
    }
    assert leaderboard(results).splitlines() == [
        "| model | clean | pgd |",
        "|---|---|---|",
        "| standard | 100.0 / 95.0 | 12.5 / 10.0 |",
        "| llr | 100.0 / 90.0 | - |",
    ]


def test_leaderboard_adds_bound_columns_and_convergence_marks() -> None:
    check = {"converged": False, "accuracy@80": 0.75, "scaled_accuracy@80": 0.5,
             "flipped": [3, 9], "images": 4}
    results = {
        "pgd": {"spsa": {"accuracy@80": 0.75, "accuracy@100": 0.7, "budget_check": check,
                         "white_box_bound": {"accuracy@80": 0.0, "accuracy@100": 0.0}},
                "clean": {"accuracy@80": 1.0, "accuracy@100": 1.0}},
        "llr": {"spsa": {"accuracy@80": 0.5, "accuracy@100": 0.5,
                         "budget_check": {**check, "converged": True, "flipped": [],
                                          "scaled_accuracy@80": 0.5},
                         "white_box_bound": {"skipped": "no gradients"}},
                "clean": {"accuracy@80": 1.0, "accuracy@100": 1.0}},
    }
    assert leaderboard(results).splitlines() == [
        "| model | spsa | spsa (white-box bound) | clean |",
        "|---|---|---|---|",
        "| pgd | 75.0 / 70.0 ✗ | 0.0 / 0.0 | 100.0 / 100.0 |",
        "| llr | 50.0 / 50.0 ✓ | - | 100.0 / 100.0 |",
    ]
    assert budget_table(results).splitlines()[2:] == [
        "| pgd | 75.0 -> 50.0 (2/4 flipped) NOT CONVERGED |",
        "| llr | 75.0 -> 50.0 (0/4 flipped) |",
    ]


def test_eval_groups_cover_the_demo_suite_once() -> None:
    from llrnet.demo import EVAL_GROUPS, demo_suite

    grouped = [name for group in EVAL_GROUPS for name in group]
    for quick in (True, False):
        assert sorted(grouped) == sorted(demo_suite(quick=quick).names)


def test_next_task_trains_first_then_the_costliest_group() -> None:
    from llrnet.demo.run import _next_task, _Task

    ready = [_Task("a", 3), _Task("b", 0), _Task("c"), _Task("a", 0), _Task("d")]
    taken = [_next_task(ready) for _ in range(5)]
    assert taken == [_Task("c"), _Task("d"), _Task("b", 0), _Task("a", 0), _Task("a", 3)]
    assert ready == []
