"""Error paths of training: configuration, overrides, presets, datasets, tasks, the LLR
regularizer, CLI. Every message is matched."""

from __future__ import annotations

from pathlib import Path

import pytest
import torch
from torch import nn

from llrnet.cli import main
from llrnet.core.errors import UsageError
from llrnet.train import load_config
from llrnet.train.bn_replay import frozen_batch_norm
from llrnet.train.build import build_task
from llrnet.train.config import TaskConfig
from llrnet.train.data import build_datasets, global_batch_indices, shard
from llrnet.train.llr import LLROptions, llr_regularizer
from llrnet.train.tasks import TASKS, LLRTask, PGDTask, StandardTask, TRADESTask

MODEL = nn.Sequential(nn.Flatten(), nn.Linear(4, 2))
X = torch.rand(3, 1, 2, 2)
Y = torch.tensor([0, 1, 0])


@pytest.mark.parametrize(("override", "message"), [
    ("optim.lrr=0.1", r"unknown key 'lrr' at optim; valid keys: .*lr,"),
    ("stepz=3", r"unknown key 'stepz' at the top level"),
    ("steps=ten", r"steps: expected an integer, got 'ten'"),
    ("steps=1.5", r"steps: expected an integer, got 1.5"),
    ("optim.lr=fast", r"optim.lr: expected a number, got 'fast'"),
    ("tensorboard=1", r"tensorboard: expected true or false, got 1"),
    ("optim.schedule=linear", r"optim.schedule: 'linear' is not one of 'constant', 'step'"),
    ("on_nonfinite=ignore", r"on_nonfinite: 'ignore' is not one of 'stop', 'skip'"),
    ("optim.betas=[0.9]", r"optim.betas: expected 2 values"),
    ("optim.milestones=5", r"optim.milestones: expected a list"),
    ("optim.lr.x=1", r"optim.lr has no sub-keys"),
    ("steps", r"must look like key=value"),
    ("steps=0", r"steps must be >= 1, got 0"),
    ("optim.lr=-1", r"optim.lr must be >= 0, got -1"),
    ("ema_decay=1.5", r"ema_decay must be in \(0, 1\) or null"),
    ("optim.milestones=[5, 2]", r"optim.milestones must be increasing"),
    ("model.kwargs=3", r"model.kwargs: expected a mapping, got 3"),
])
def test_bad_overrides(override: str, message: str) -> None:
    with pytest.raises(UsageError, match=message):
        load_config("digits_standard", [override])


def test_unknown_preset_lists_the_presets() -> None:
    with pytest.raises(UsageError,
                       match=r"unknown preset 'digits_nope'; choose one of: .*digits_llr"):
        load_config("digits_nope")


def test_missing_and_malformed_config_files(tmp_path: Path) -> None:
    with pytest.raises(FileNotFoundError, match="config file not found"):
        load_config(str(tmp_path / "missing.yaml"))
    bad = tmp_path / "bad.yaml"
    bad.write_text("steps: [1,\n")
    with pytest.raises(UsageError, match="is not valid YAML"):
        load_config(str(bad))
    scalar = tmp_path / "scalar.yaml"
    scalar.write_text("3\n")
    with pytest.raises(UsageError, match="must hold a mapping of settings"):
        load_config(str(scalar))
    loop = tmp_path / "loop.yaml"
    loop.write_text(f"extends: {loop}\n")
    with pytest.raises(UsageError, match="cycle"):
        load_config(str(loop))


def test_task_options_are_checked_against_the_task() -> None:
    with pytest.raises(UsageError, match=r"unknown key 'lam' in task.options \(pgd\); valid keys:"):
        build_task(load_config("digits_pgd", ["task.options.lam=1"]).task)
    with pytest.raises(UsageError, match=r"task.options \(llr\).steps: expected an integer"):
        build_task(load_config("digits_llr", ["task.options.steps=many"]).task)
    with pytest.raises(ValueError, match="eps must be >= 0"):
        build_task(load_config("digits_llr", ["task.options.eps=-1"]).task)
    with pytest.raises(UsageError, match="unknown task 'fgsm'; valid names: llr, pgd, standard"):
        TASKS.get("fgsm")


def test_datasets_that_are_not_there() -> None:
    with pytest.raises(UsageError, match=r"dataset 'cifar10' needs data\.root"):
        build_datasets(load_config(None, ["data.name=cifar10"]).data)
    with pytest.raises(UsageError, match=r"data\.name: 'mnist' is not one of"):
        load_config(None, ["data.name=mnist"])


def test_batches_that_do_not_fit() -> None:
    with pytest.raises(UsageError, match="batch_size 64 is larger than the training set"):
        global_batch_indices(10, 64, 0, 0)
    with pytest.raises(UsageError, match="not divisible by the 3 processes"):
        shard(global_batch_indices(100, 16, 0, 0), 0, 3)


def test_cli_errors_are_one_line(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["train", "--preset", "digits_standard", "--set", "optim.lrr=1",
                 "--out", str(tmp_path)]) == 2
    err = capsys.readouterr().err
    assert err.startswith("llrnet train: error: override 'optim.lrr=1': unknown key 'lrr'")
    assert err.count("\n") == 1
    assert main(["train", "--preset", "digits_standard"]) == 2
    assert "give --out DIR" in capsys.readouterr().err
    assert main(["train"]) == 2
    assert "give --preset NAME" in capsys.readouterr().err
    assert main(["train", "--out", str(tmp_path / "none"), "--resume"]) == 2
    assert "is not a training run folder" in capsys.readouterr().err


def test_cli_lists_and_prints(capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["train", "--list-presets"]) == 0
    assert "digits_llr" in capsys.readouterr().out.split()
    assert main(["train", "--preset", "digits_llr", "--set", "steps=5", "--print-config"]) == 0
    text = capsys.readouterr().out
    assert "steps: 5" in text and "name: llr" in text


@pytest.mark.parametrize(
    ("batch", "match"),
    [
        ((X,), "must be a pair"),
        ((X.long(), Y), "float tensor"),
        ((X, Y.float()), "labels must be int64"),
        ((X, Y[:2]), r"labels must be int64 \[3\]"),
    ],
)
def test_bad_batches_are_rejected(batch: tuple, match: str) -> None:  # type: ignore[type-arg]
    with pytest.raises(ValueError, match=match):
        StandardTask()(MODEL, batch, 0)


@pytest.mark.parametrize(
    ("make", "match"),
    [
        (lambda: LLRTask(eps=-0.1), "eps must be >= 0"),
        (lambda: LLRTask(steps=-1), "steps must be >= 0"),
        (lambda: LLRTask(lam=-1.0), "must be >= 0"),
        (lambda: PGDTask(step_size=-0.1), "step_size must be >= 0"),
        (lambda: PGDTask(attack_bn="running"), "attack_bn must be 'batch' or 'eval'"),
        (lambda: TRADESTask(beta=-1.0), "beta must be >= 0"),
    ],
)
def test_bad_task_settings_are_rejected(make, match: str) -> None:  # type: ignore[no-untyped-def]
    with pytest.raises(ValueError, match=match):
        make()


def test_llr_regularizer_checks_its_arguments() -> None:
    with pytest.raises(ValueError, match="eps must be >= 0"):
        llr_regularizer(MODEL, X, Y, LLROptions(eps=-1.0, steps=1))
    with pytest.raises(ValueError, match="steps must be >= 0"):
        llr_regularizer(MODEL, X, Y, LLROptions(eps=0.1, steps=-2))
    with pytest.raises(ValueError, match=r"y must have shape \[3\]"):
        llr_regularizer(MODEL, X, Y[:1], LLROptions(eps=0.1, steps=1))


def test_frozen_batch_norm_mode_is_checked() -> None:
    with pytest.raises(ValueError, match="'batch' or 'eval'"), frozen_batch_norm(MODEL, mode="x"):
        pass


@pytest.mark.parametrize("name", ["standard", "pgd", "trades", "llr"])
def test_the_removed_binary_option_is_an_unknown_key(name: str) -> None:
    # The model's head decides the loss now; a preset still saying `binary` must fail.
    with pytest.raises(UsageError, match=rf"unknown key 'binary' in task.options \({name}\)"):
        build_task(TaskConfig(name=name, options={"binary": True}))


@pytest.mark.parametrize("until_step", [-1, 0, True, 1.5])
def test_until_step_below_one_is_refused_before_the_run_folder_exists(
        tmp_path: Path, until_step: object) -> None:
    from llrnet.train import train

    config = load_config("digits_standard", ["steps=2"])
    with pytest.raises(UsageError, match=r"until_step must be an integer >= 1"):
        train(config, tmp_path / "run", until_step=until_step, progress=False)  # type: ignore[arg-type]
    assert not (tmp_path / "run").exists()
