"""Error paths of the training tasks and the LLR regularizer: clear messages."""

from __future__ import annotations

import pytest
import torch
from torch import nn

from llrnet.errors import UsageError
from llrnet.train.bn_replay import frozen_batch_norm
from llrnet.train.config import TaskConfig
from llrnet.train.llr import llr_regularizer
from llrnet.train.setup import build_task
from llrnet.train.tasks import LLRTask, PGDTask, StandardTask, TRADESTask

MODEL = nn.Sequential(nn.Flatten(), nn.Linear(4, 2))
X = torch.rand(3, 1, 2, 2)
Y = torch.tensor([0, 1, 0])


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
        llr_regularizer(MODEL, X, Y, eps=-1.0, steps=1)
    with pytest.raises(ValueError, match="steps must be >= 0"):
        llr_regularizer(MODEL, X, Y, eps=0.1, steps=-2)
    with pytest.raises(ValueError, match=r"y must have shape \[3\]"):
        llr_regularizer(MODEL, X, Y[:1], eps=0.1, steps=1)


def test_frozen_batch_norm_mode_is_checked() -> None:
    with pytest.raises(ValueError, match="'batch' or 'eval'"), frozen_batch_norm(MODEL, mode="x"):
        pass


@pytest.mark.parametrize("name", ["standard", "pgd", "trades", "llr"])
def test_the_removed_binary_option_is_an_unknown_key(name: str) -> None:
    # The model's head decides the loss now; a preset still saying `binary` must fail.
    with pytest.raises(UsageError, match=rf"unknown key 'binary' in task.options \({name}\)"):
        build_task(TaskConfig(name=name, options={"binary": True}))
