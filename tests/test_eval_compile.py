"""``compile=True`` / ``--compile`` in evaluate, ``llrnet eval``, ``predict`` and ``train``:
the same results as eager, outside the resume fingerprint, recorded, eager on failure."""

from __future__ import annotations

import json
import warnings
from collections.abc import Iterator, Mapping
from pathlib import Path
from typing import Any

import pytest
import torch
from PIL import Image

from llrnet.cli import main
from llrnet.eval import evaluate, format_table, get_suite
from llrnet.eval.suites import suite_dataset
from llrnet.models import compiled, create_model, save_weights
from llrnet.models.compiled import is_compiled
from llrnet.train import load_config

_REAL_COMPILE = torch.compile
DIGITS = {"spsa_steps": 2, "spsa_samples": 2, "batch_size": 4}
"""The digits suite with SPSA cut to seconds."""
ATTACKS = ["clean", "spatial_grid", "spsa_with_random_spatial"]
"""Three of its five kinds (with SPSA's white-box bound, a gradient attack): corruptions and
Boundary add minutes on a busy CPU and nothing that --compile changes."""


@pytest.fixture(autouse=True)
def _fresh_process_state(monkeypatch: pytest.MonkeyPatch) -> Iterator[None]:
    """Each test starts as a process where torch.compile has not failed yet."""
    monkeypatch.setattr(compiled, "_UNAVAILABLE", [])
    yield


@pytest.fixture
def dynamo_only(monkeypatch: pytest.MonkeyPatch) -> list[Any]:
    """torch.compile traced by dynamo, run by the eager backend (no C++ compiler, seconds);
    the list collects each compiled function."""
    made: list[Any] = []

    def compile_(fn: Any, **kwargs: Any) -> Any:
        made.append(fn)
        return _REAL_COMPILE(fn, backend="eager")

    monkeypatch.setattr(torch, "compile", compile_)
    return made


def _model() -> torch.nn.Module:
    torch.manual_seed(0)
    return create_model("digits_wrn", depth=10, width=1)


def _untimed(records: Mapping[str, Any]) -> dict[str, Any]:
    """``records`` with every ``wall_time`` set to 0: what must agree between runs."""
    return {key: (0.0 if key == "wall_time" else
                  _untimed(value) if isinstance(value, Mapping) else value)
            for key, value in records.items()}


def _run(out: Path, **options: Any) -> dict[str, Any]:
    options.setdefault("attacks", ATTACKS)
    return evaluate(_model(), get_suite("digits", **DIGITS), suite_dataset("digits"),
                    out_dir=out, max_images=4, progress=False, seed=3, **options)


def test_the_digits_table_is_identical_compiled_and_resumes_eager(
        tmp_path: Path, dynamo_only: list[Any]) -> None:
    eager = _run(tmp_path / "eager")
    assert not dynamo_only
    fast = _run(tmp_path / "compiled", compile=True)
    assert len(dynamo_only) == 1  # fp32: the judging model is also every attack's searcher
    assert format_table(_untimed(fast)) == format_table(_untimed(eager))
    assert _untimed(fast) == _untimed(eager)
    results = json.loads((tmp_path / "compiled" / "results.json").read_text())
    config = json.loads((tmp_path / "compiled" / "config.json").read_text())
    manifest = json.loads((tmp_path / "compiled" / "state" / "manifest.json").read_text())
    assert results["compile"] is True
    assert config["compile"] is True and config["compile_requested"] is True
    assert "compile" not in manifest
    assert json.loads((tmp_path / "eager" / "results.json").read_text())["compile"] is False
    # Execution only: the compiled run's folder resumes eager (every chunk loaded, so even
    # the timings are the compiled run's) and the eager one resumes compiled.
    again = _run(tmp_path / "compiled")
    assert again == fast
    assert _run(tmp_path / "eager", compile=True) == eager


def test_bf16_compiles_the_model_and_its_search_copies(tmp_path: Path,
                                                       dynamo_only: list[Any]) -> None:
    records = evaluate(_model(), get_suite("digits", **DIGITS), suite_dataset("digits"),
                       out_dir=tmp_path, max_images=4, progress=False, precision="bf16",
                       attacks=["spatial_grid", "spsa_with_random_spatial"],
                       white_box_bounds=False, compile=True)
    # the fp32 judge, the bf16 copy (the grid searches in bf16), the fp32 channels_last
    # copy (SPSA searches in fp32)
    assert len(dynamo_only) == 3
    assert records["spatial_grid"]["search_precision"] == "bf16"
    assert records["spsa_with_random_spatial"]["search_precision"] == "fp32"
    assert json.loads((tmp_path / "results.json").read_text())["compile"] is True


def test_where_compiling_fails_the_evaluation_warns_once_and_runs_eager(
        tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    eager = _run(tmp_path / "eager")

    def no_compiler(fn: Any, **kwargs: Any) -> Any:
        def run(*args: Any, **kw: Any) -> Any:
            raise RuntimeError("InductorError: CppCompileError: no C++ compiler found")
        return run

    monkeypatch.setattr(torch, "compile", no_compiler)
    model = _model()
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        fast = evaluate(model, get_suite("digits", **DIGITS), suite_dataset("digits"),
                        out_dir=tmp_path / "fallback", max_images=4, progress=False, seed=3,
                        attacks=ATTACKS, compile=True)
    mine = [w for w in caught if "torch.compile" in str(w.message)]
    assert len(mine) == 1 and "no C++ compiler found" in str(mine[0].message)
    assert _untimed(fast) == _untimed(eager)
    assert json.loads((tmp_path / "fallback" / "results.json").read_text())["compile"] is False
    assert not is_compiled(model)


def test_a_model_the_caller_compiled_stays_compiled(tmp_path: Path,
                                                    dynamo_only: list[Any]) -> None:
    model = _model()
    assert compiled.compile_model(model)
    evaluate(model, get_suite("digits", **DIGITS), suite_dataset("digits"), out_dir=tmp_path,
             max_images=2, progress=False, attacks=["clean"])
    assert is_compiled(model)


def test_compile_must_be_a_bool(tmp_path: Path) -> None:
    with pytest.raises(ValueError, match="compile must be True or False, got 'yes'"):
        _run(tmp_path, compile="yes")


def test_cli_eval_and_predict_take_compile(tmp_path: Path, dynamo_only: list[Any],
                                           capsys: pytest.CaptureFixture[str]) -> None:
    base = ["eval", "--suite", "digits", "--model", "digits_wrn", "--max-images", "2",
            "--attacks", "clean", "--no-progress", "--out", str(tmp_path / "eval")]
    assert main([*base, "--compile"]) == 0
    assert json.loads((tmp_path / "eval" / "results.json").read_text())["compile"] is True
    assert len(dynamo_only) == 1
    assert main(base) == 0  # resumes without it
    torch.manual_seed(0)
    weights = tmp_path / "tiny.safetensors"
    save_weights(create_model("llr_pretrain_adv_tiny"), weights, {"recipe": "test"})
    image = tmp_path / "a.png"
    Image.new("RGB", (40, 30), (200, 30, 90)).save(image)
    capsys.readouterr()
    command = ["predict", str(image), "--weights", str(weights), "--json"]
    assert main(command) == 0
    eager = json.loads(capsys.readouterr().out)
    assert main([*command, "--compile"]) == 0
    fast = json.loads(capsys.readouterr().out)
    assert len(dynamo_only) == 2
    assert fast["label"] == eager["label"]
    assert fast["bird_logit"] == pytest.approx(eager["bird_logit"], abs=1e-5)


def test_train_compile_is_recorded_and_resumable_without_it(
        tmp_path: Path, dynamo_only: list[Any], capsys: pytest.CaptureFixture[str]) -> None:
    out = tmp_path / "run"
    base = ["train", "--preset", "digits_standard", "--out", str(out), "--no-progress",
            "--set", "steps=4", "--set", "batch_size=8", "--set", "eval.batch_size=8",
            "--set", "data.eval_images=8", "--set", "checkpoint_every=2",
            "--set", "log_every=2", "--set", "tensorboard=false"]
    assert main([*base, "--compile", "--until-step", "2"]) == 0
    assert load_config(str(out / "config.yaml")).compile is True
    assert dynamo_only
    assert main(["train", "--out", str(out), "--resume", "--no-progress",
                 "--set", "compile=false"]) == 0
    assert load_config(str(out / "config.yaml")).compile is False
    assert "finished 4 steps" in capsys.readouterr().out
    assert load_config("digits_standard", ["compile=true"]).compile is True


@pytest.mark.slow
def test_inductor_digits_table_is_identical(tmp_path: Path) -> None:
    """The real backend (inductor, C++ on a CPU) on two of the digits suite's attacks: a
    compile on a busy 2-core CPU takes minutes, so clean and the spatial grid only."""
    two = ["clean", "spatial_grid"]
    eager = _run(tmp_path / "eager", attacks=two, white_box_bounds=False)
    with warnings.catch_warnings():
        warnings.simplefilter("error", RuntimeWarning)  # a fallback to eager fails the test
        fast = _run(tmp_path / "compiled", attacks=two, white_box_bounds=False, compile=True)
    assert json.loads((tmp_path / "compiled" / "results.json").read_text())["compile"] is True
    assert format_table(_untimed(fast)) == format_table(_untimed(eager))
