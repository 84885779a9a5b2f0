"""The run folder: file names, reading a run's config and result, resume checks."""

from __future__ import annotations

from pathlib import Path

import pytest

from llrnet.core.errors import UsageError
from llrnet.train import RunDir, load_config, load_run_config
from llrnet.train.checkpoint import save_checkpoint
from llrnet.train.run_dir import RESUMABLE_CHANGES, check_resumable


def test_file_names_and_states(tmp_path: Path) -> None:
    run = RunDir(tmp_path / "run")
    assert run.config_file == tmp_path / "run" / "config.yaml"
    assert run.checkpoints == tmp_path / "run" / "checkpoints"
    assert run.final_weights == tmp_path / "run" / "final.safetensors"
    assert run.result_file == tmp_path / "run" / "result.json"
    assert not run.is_started() and not run.is_finished() and not run.path.exists()
    save_checkpoint(run.checkpoints, 3, {"step": 3})
    assert run.is_started() and not run.is_finished()
    run.final_weights.write_bytes(b"")
    assert run.is_finished()


def test_config_and_result_round_trip(tmp_path: Path) -> None:
    run = RunDir(tmp_path)
    config = load_config("digits_llr", ["steps=7"])
    run.write_config(config)
    assert run.read_config() == config == load_run_config(tmp_path)
    assert run.read_config(["optim.lr=0.5"]).optim.lr == 0.5
    assert run.read_metrics() == {}
    run.write_result(7, {"clean_accuracy": 0.5})
    assert run.read_metrics() == {"clean_accuracy": 0.5}


def test_a_folder_without_a_config_is_not_a_run(tmp_path: Path) -> None:
    with pytest.raises(FileNotFoundError, match="is not a training run folder"):
        RunDir(tmp_path).read_config()


def test_prepare_refuses_a_started_run_without_resume_and_a_changed_config(
        tmp_path: Path) -> None:
    run = RunDir(tmp_path)
    config = load_config("digits_standard")
    run.prepare(config, resume=False)  # empty folder: fine
    run.write_config(config)
    save_checkpoint(run.checkpoints, 1, {"step": 1})
    with pytest.raises(UsageError, match="already holds a training run; pass --resume"):
        run.prepare(config, resume=False)
    run.prepare(load_config("digits_standard", ["log_every=1", "device=cuda"]), resume=True)
    with pytest.raises(UsageError, match=r"different configuration \(steps: 100 -> 5\)"):
        run.prepare(load_config("digits_standard", ["steps=5"]), resume=True)


def test_free_form_mappings_compare_as_a_whole() -> None:
    config = load_config("digits_standard", ["model.kwargs={width: 2}"])
    saved = load_config("digits_standard", ["model.kwargs={width: 1}"])
    from llrnet.train import config_to_dict

    with pytest.raises(UsageError, match=r"model\.kwargs: \{'width': 1\} -> \{'width': 2\}"):
        check_resumable(config_to_dict(saved), config)
    assert {"log_every", "device", "eval.every"} <= RESUMABLE_CHANGES
