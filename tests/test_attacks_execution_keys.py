"""Settings declared speed-only (``EXECUTION_KEYS``) leave every result bit-identical.

The resume check of an evaluation ignores these keys, so a run can resume with
other values; that is only sound if each of them changes nothing but speed and
memory. Each case runs one attack with two or three values of one key and
demands exact equality, on an oracle whose own arithmetic does not depend on the
batch size (a matrix kernel's rounding may, and that is outside an attack's control).
"""

from __future__ import annotations

import inspect
from collections.abc import Callable
from typing import Any

import pytest
import torch
from torch import nn

import llrnet.attacks as attacks
from attack_helpers import data, linear_model
from llrnet.attacks import (
    SPSA,
    Attack,
    Boundary,
    CheckedSpatialGrid,
    CommonCorruptions,
    SpatialGrid,
)
from llrnet.eval.suites import EXECUTION_KEYS

pytestmark = pytest.mark.usefixtures("one_thread")


def boundary(**kwargs: Any) -> Boundary:
    return Boundary(threshold=0.05, iterations=40, max_directions=25, **kwargs)


FAST = ("gaussian_noise", "contrast", "pixelate", "brightness")

# (attack class, key, builder taking the key's value, values to compare)
CASES: list[tuple[type[Attack], str, Callable[[Any], Attack], tuple[Any, ...]]] = [
    (Boundary, "directions_per_batch", lambda v: boundary(directions_per_batch=v), (1, 5, 25)),
    (Boundary, "max_batch", lambda v: boundary(max_batch=v), (1, 7, 1000)),
    (SPSA, "max_batch", lambda v: SPSA(0.1, 5, samples=8, max_batch=v), (3, 8, 1000)),
    (SpatialGrid, "batch_size",
     lambda v: SpatialGrid("challenge", granularity=(3, 3, 3), batch_size=v), (1, 5, 1000)),
    (CheckedSpatialGrid, "batch_size",
     lambda v: CheckedSpatialGrid(granularity=(3, 3, 3), border=1, batch_size=v), (1, 5, 1000)),
    (CommonCorruptions, "batch_size", lambda v: CommonCorruptions(FAST, workers=0, batch_size=v),
     (1, 3, 1000)),
]


def run(attack: Attack, model: nn.Module) -> torch.Tensor:
    x, y = data(model, 4, 8)
    pool = data(model, 16, 9)
    if attack.needs_pool:
        return attack(model, x, y, seeds=torch.tensor([3, 1, 4, 1]), pool=pool)
    return attack(model, x, y, seeds=torch.tensor([3, 1, 4, 1]))


@pytest.mark.parametrize(("cls", "key", "build", "values"), CASES,
                         ids=[f"{c[0].__name__}.{c[1]}" for c in CASES])
def test_an_execution_key_does_not_change_results(cls: type[Attack], key: str,
                                                  build: Callable[[Any], Attack],
                                                  values: tuple[Any, ...]) -> None:
    model = linear_model(rowwise=True)  # batch-size-invariant arithmetic: see RowwiseLinear
    outputs = [run(build(value), model) for value in values]
    for value, output in zip(values[1:], outputs[1:]):
        assert torch.equal(output, outputs[0]), f"{cls.__name__}({key}={value}) differs"


def test_boundary_walks_far_enough_for_chunking_to_matter() -> None:
    """The Boundary cases above only test something if candidates go unused: check
    that the walk accepts candidates before the last of an iteration's 25."""
    model = linear_model()
    attack = boundary(directions_per_batch=1)
    run(attack, model)
    walked = attack.last_stats["model_evaluations"]
    assert 4 * 2 < walked < 4 * (2 + 40 * 25)


@pytest.mark.slow
def test_corruption_workers_do_not_change_results() -> None:
    model = linear_model()
    parallel = CommonCorruptions(FAST, workers=2)
    try:
        spawned = run(parallel, model)
    finally:
        parallel.close()
    assert torch.equal(spawned, run(CommonCorruptions(FAST, workers=0), model))


def test_every_execution_key_of_every_attack_is_checked() -> None:
    """A new attack (or argument) named like an execution key needs a case here."""
    declared = set()
    for name in attacks.__all__:
        value = getattr(attacks, name)
        if inspect.isclass(value) and issubclass(value, Attack):
            for parameter in inspect.signature(value.__init__).parameters:
                if parameter in EXECUTION_KEYS:
                    declared.add((value, parameter))
    checked = {(cls, key) for cls, key, _, _ in CASES} | {(CommonCorruptions, "workers")}
    assert declared == checked
