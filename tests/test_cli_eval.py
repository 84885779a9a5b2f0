"""``llrnet eval``: end to end on tiny models, and one-line errors with exit code 2."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import torch

from llrnet.cli import main
from llrnet.models import create_model, save_weights


def test_eval_with_weights_writes_the_report(tmp_path: Path, capsys: pytest.CaptureFixture[str]
                                             ) -> None:
    torch.manual_seed(0)
    weights = tmp_path / "digits.safetensors"
    save_weights(create_model("digits_wrn", depth=10, width=1), weights, {"recipe": "test"})
    out = tmp_path / "out"
    argv = ["eval", "--suite", "linf", "--weights", str(weights), "--out", str(out),
            "--max-images", "4", "--batch-size", "2", "--attacks", "clean", "--no-progress"]
    assert main(argv) == 0
    table = capsys.readouterr().out
    assert table.splitlines()[0].split()[:3] == ["attack", "acc@80%", "acc@100%"]
    assert "clean" in table
    results = json.loads((out / "results.json").read_text())
    assert results["attacks"]["clean"]["images"] == 4
    assert (out / "config.json").exists() and (out / "examples.png").exists()
    # Same arguments again: resumes (nothing to do) and agrees.
    assert main(argv) == 0
    again = json.loads((out / "results.json").read_text())
    assert again == results


@pytest.mark.parametrize(
    ("extra", "message"),
    [
        (["--suite", "nope", "--model", "digits_wrn"], "unknown suite 'nope'; choose from"),
        (["--suite", "linf", "--model", "nope"], "unknown model 'nope'"),
        (["--suite", "linf", "--weights", "/missing.safetensors"], "weights file not found"),
        (["--suite", "linf", "--model", "digits_wrn", "--attacks", "spsa"], "unknown attack"),
        (["--suite", "linf", "--model", "digits_wrn", "--attacks", ","], "--attacks is empty"),
        (["--suite", "linf", "--model", "digits_wrn", "--max-images", "0"], "--max-images"),
        (["--suite", "bird_or_bicycle", "--model", "llr_pretrain_adv_tiny", "--data",
          "/missing"], "bird-or-bicycle data not found at /missing"),
        (["--suite", "digits", "--model", "digits_wrn", "--data", "/tmp"],
         "uses the bundled digits"),
        (["--suite", "linf", "--model", "digits_wrn", "--data", "/missing"], "is not a folder"),
    ],
)
def test_errors_are_one_line(tmp_path: Path, capsys: pytest.CaptureFixture[str],
                             extra: list[str], message: str) -> None:
    code = main(["eval", "--out", str(tmp_path), "--no-progress", *extra])
    err = capsys.readouterr().err.strip()
    assert code == 2
    assert len(err.splitlines()) == 1 and err.startswith("llrnet eval: error:")
    assert message in err


def test_registered_model_resumes_but_not_with_other_seed(
        tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    base = ["eval", "--suite", "digits", "--model", "digits_wrn", "--out", str(tmp_path),
            "--max-images", "2", "--attacks", "clean", "--no-progress"]
    assert main(base) == 0
    assert main(base) == 0  # the untrained model is rebuilt from --seed, so it resumes
    capsys.readouterr()
    assert main([*base, "--seed", "1"]) == 2
    assert "holds an evaluation with different arguments" in capsys.readouterr().err


def test_help_lists_each_suite_with_its_help_and_default_data(
        capsys: pytest.CaptureFixture[str]) -> None:
    from llrnet.data.held_out import HELD_OUT_SETS
    from llrnet.eval import list_suites
    from llrnet.eval.suites import suite_facts

    with pytest.raises(SystemExit) as exit_:
        main(["eval", "--help"])
    assert exit_.value.code == 0
    listing = " ".join(capsys.readouterr().out.split("suites (data:")[1].split())
    for name in list_suites():
        facts = suite_facts(name)
        assert f"{name} {facts.help} data: {HELD_OUT_SETS.get(facts.data).help}" in listing


def test_a_registered_suite_brings_its_own_data_and_class_names(
        tmp_path: Path, capsys: pytest.CaptureFixture[str],
        monkeypatch: pytest.MonkeyPatch) -> None:
    """The CLI asks the suite: a new suite needs no change to the command."""
    import llrnet.eval
    from llrnet.attacks import Identity
    from llrnet.eval import Suite, register_suite
    from llrnet.eval.suites import SUITE_FACTS, SUITES

    seen: dict[str, object] = {}
    real = llrnet.eval.evaluate

    def spy(model: torch.nn.Module, suite: Suite, dataset: object, **kwargs: object) -> object:
        seen.update(dataset=dataset, class_names=kwargs["class_names"])
        return real(model, suite, dataset, **kwargs)  # type: ignore[arg-type]

    monkeypatch.setattr(llrnet.eval, "evaluate", spy)

    @register_suite("cli_probe", help="a probe suite", data="digits",
                    class_names=("six", "seven"))
    def cli_probe(*, batch_size: int = 2) -> Suite:
        return Suite.custom([Identity()], name="cli_probe", batch_size=batch_size)

    try:
        base = ["eval", "--suite", "cli_probe", "--model", "digits_wrn", "--no-progress",
                "--max-images", "2"]
        assert main([*base, "--out", str(tmp_path / "a")]) == 0
        assert len(seen["dataset"]) == 108  # type: ignore[arg-type]  # the bundled digits
        assert seen["class_names"] == ("six", "seven")
        assert json.loads((tmp_path / "a" / "results.json").read_text())["attacks"]["clean"][
            "images"] == 2
        capsys.readouterr()
        assert main([*base, "--out", str(tmp_path / "b"), "--data", str(tmp_path)]) == 2
        assert "uses the bundled digits" in capsys.readouterr().err  # its data's own rule
        with pytest.raises(SystemExit):
            main(["eval", "--help"])
        assert "a probe suite" in capsys.readouterr().out
    finally:
        SUITES._entries.pop("cli_probe", None)
        SUITE_FACTS.pop("cli_probe", None)


def test_check_budget_and_white_box_bound_flags(tmp_path: Path,
                                                capsys: pytest.CaptureFixture[str]) -> None:
    base = ["eval", "--suite", "digits", "--model", "digits_wrn", "--max-images", "2",
            "--no-progress"]
    # A bare --check-budget is K = 4; --no-white-box-bounds overrides the digits default.
    assert main([*base, "--out", str(tmp_path / "a"), "--attacks", "clean", "--check-budget",
                 "--no-white-box-bounds"]) == 0
    manifest = json.loads((tmp_path / "a" / "state" / "manifest.json").read_text())
    assert manifest["check_budget"] == {"factor": 4, "images": 32}
    assert "white_box_bounds" not in manifest
    capsys.readouterr()
    assert main([*base, "--out", str(tmp_path / "b"), "--attacks", "spsa_with_random_spatial",
                 "--suite-option", "spsa_steps=1", "--suite-option", "spsa_samples=2",
                 "--check-budget", "2", "--check-budget-images", "1"]) == 0
    table = capsys.readouterr().out.splitlines()
    assert table[0].split()[-2:] == ["budget", "check"]
    assert table[3].startswith("spsa_with_random_spatial (white-box bound)")
    results = json.loads((tmp_path / "b" / "results.json").read_text())
    record = results["attacks"]["spsa_with_random_spatial"]
    assert record["budget_check"]["factor"] == 2 and record["budget_check"]["images"] <= 1
    assert record["budget_check"]["budget"] == {"spsa.steps": 1, "spsa.samples": 2}
    assert record["budget_check"]["scaled_budget"] == {"spsa.steps": 2, "spsa.samples": 2}
    assert record["white_box_bound"]["images"] == 2


@pytest.mark.parametrize(("flag", "value"), [("--check-budget", "0"),
                                             ("--check-budget-images", "0"),
                                             ("--check-budget", "x"),
                                             ("--bound-attack", "fgsm")])
def test_bad_check_budget_values_are_one_line(tmp_path: Path, capsys: pytest.CaptureFixture[str],
                                              flag: str, value: str) -> None:
    with pytest.raises(SystemExit) as stop:
        main(["eval", "--suite", "digits", "--model", "digits_wrn", "--out", str(tmp_path),
              flag, value])
    err = capsys.readouterr().err.strip()
    assert stop.value.code == 2
    assert len(err.splitlines()) == 1 and err.startswith("llrnet eval: error: argument "
                                                         f"{flag}:")
    assert not (tmp_path / "state").exists()
