"""``llrnet demo --quick``: trains three models, evaluates them, writes the report."""

from __future__ import annotations

from pathlib import Path

import pytest
from PIL import Image

from llrnet.cli import main
from llrnet.demo import MODELS, leaderboard

pytestmark = pytest.mark.usefixtures("one_thread")


@pytest.mark.slow
def test_quick_demo_writes_the_report_and_plots_and_resumes(
        tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    out = tmp_path / "demo_out"
    assert main(["demo", "--out", str(out), "--quick", "--no-progress"]) == 0
    printed = capsys.readouterr().out
    report = (out / "report.md").read_text()
    table = (out / "table.txt").read_text().strip()
    assert table in report and table in printed  # the terminal ends with the table
    assert [line.split("|")[1].strip() for line in table.splitlines()[2:]] == list(MODELS)
    for image in ("risk_coverage.png", "training_curves.png", "adversarial_examples.png"):
        assert f"]({image})" in report
        with Image.open(out / image) as png:
            assert png.format == "PNG" and png.width > 100 and png.height > 100
    for name in MODELS:
        assert (out / name / "train" / "final.safetensors").is_file()
        assert (out / name / "eval" / "results.json").is_file()

    # A rerun skips what is finished: the weights are not rewritten.
    stamps = {n: (out / n / "train" / "final.safetensors").stat().st_mtime_ns for n in MODELS}
    assert main(["demo", "--out", str(out), "--quick", "--no-progress"]) == 0
    assert stamps == {n: (out / n / "train" / "final.safetensors").stat().st_mtime_ns
                      for n in MODELS}
    assert (out / "table.txt").read_text().strip() == table


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
