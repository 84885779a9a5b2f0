"""One contract for every attack that ``llrnet.attacks`` exports (as timm tests every model).

The attacks are found in the package, so exporting a new attack without a case in
``CASES`` fails here. Each case is a small budget on a tiny model at 16x16 px.
Checked for every attack: the output has the input's shape and dtype and lies in
[0, 1]; the attack's ball holds (when it has one); the same seeds give the same
output; an image's result does not depend on its batch-mates; the model's
train/eval mode is restored and no parameter gradient is written; the model
evaluations the attack reports are the images the model actually saw.
"""

from __future__ import annotations

from collections.abc import Callable

import pytest
import torch
from torch import Tensor, nn

import llrnet.attacks as attacks
from llrnet.attacks import (
    PGD,
    SPSA,
    Attack,
    AutoAttack,
    Boundary,
    Chain,
    CheckedRandomSpatial,
    CheckedSpatialGrid,
    CommonCorruptions,
    Identity,
    L2Ball,
    MultiTargetedPGD,
    RandomSpatial,
    SpatialGrid,
)

pytestmark = pytest.mark.usefixtures("one_thread")

SIZE = 16
MOTION = (2.0, 2.0, 10.0)

#: One small configuration per exported attack class.
CASES: dict[type[Attack], Callable[[], Attack]] = {
    Identity: Identity,
    PGD: lambda: PGD(0.05, 3, 0.02, restarts=2),
    MultiTargetedPGD: lambda: MultiTargetedPGD(L2Ball(0.5), 3, 0.2),
    SPSA: lambda: SPSA(eps=0.05, steps=3, samples=4, max_batch=6),
    Boundary: lambda: Boundary(threshold=1.0, iterations=12, max_directions=4,
                               directions_per_batch=2),
    SpatialGrid: lambda: SpatialGrid(limits=MOTION, granularity=(3, 1, 3)),
    RandomSpatial: lambda: RandomSpatial(limits=MOTION, border=2),
    CommonCorruptions: lambda: CommonCorruptions(("gaussian_noise", "contrast"), workers=0),
    Chain: lambda: Chain(RandomSpatial(limits=MOTION, border=2), PGD(0.05, 2, 0.02)),
    CheckedSpatialGrid: lambda: CheckedSpatialGrid(limits=MOTION, granularity=(3, 1, 3),
                                                   border=1),
    CheckedRandomSpatial: lambda: CheckedRandomSpatial(limits=MOTION, border=1, max_draws=5),
}

#: Exported attacks whose contract lives elsewhere, and why. AutoAttack is the
#: authors' code: it draws one random stream per batch (so an image's result
#: depends on its batch-mates, which this contract forbids) and its standard
#: budget is minutes even here; tests/test_attacks_autoattack.py covers it.
ELSEWHERE = {AutoAttack: "tests/test_attacks_autoattack.py"}

#: Attacks that never call the model (their evaluation count is 0).
MODEL_FREE = (Identity, RandomSpatial, CheckedRandomSpatial)

EXPORTED: list[type[Attack]] = sorted(
    (obj for obj in (getattr(attacks, name) for name in attacks.__all__)
     if isinstance(obj, type) and issubclass(obj, Attack) and obj is not Attack),
    key=lambda cls: cls.__name__,
)


class Tiny(nn.Module):
    """Conv -> batch norm -> pooled linear, three classes; counts the images it sees."""

    def __init__(self) -> None:
        super().__init__()
        self.conv = nn.Conv2d(3, 4, 3, padding=1)
        self.bn = nn.BatchNorm2d(4)
        self.fc = nn.Linear(4 * 4 * 4, 3)
        self.seen = 0

    def forward(self, x: Tensor) -> Tensor:
        self.seen += x.shape[0]
        features = nn.functional.adaptive_avg_pool2d(torch.relu(self.bn(self.conv(x))), 4)
        return self.fc(features.flatten(1))


def _setup() -> tuple[Tiny, Tensor, Tensor, tuple[Tensor, Tensor]]:
    torch.manual_seed(0)
    model = Tiny()
    assert model.bn.running_mean is not None
    with torch.no_grad():
        model.bn.running_mean.uniform_(-0.1, 0.1)
        model.fc.weight.mul_(20.0)  # distinct predictions across the random images
    g = torch.Generator().manual_seed(1)
    images = torch.rand(12, 3, SIZE, SIZE, generator=g)
    with torch.no_grad():
        labels = model.eval()(images).argmax(dim=1)
    assert labels.unique().numel() >= 2  # Boundary needs other-class pool images
    # Labels are the model's own predictions: every image starts correctly classified.
    return model, images[:4], labels[:4], (images[4:], labels[4:])


@pytest.mark.parametrize("cls", EXPORTED, ids=lambda cls: cls.__name__)
def test_attack_contract(cls: type[Attack]) -> None:
    if cls in ELSEWHERE:
        pytest.skip(f"{cls.__name__}: its contract is in {ELSEWHERE[cls]}")
    if cls not in CASES:
        pytest.fail(f"llrnet.attacks exports {cls.__name__} but CASES has no contract case")
    attack = CASES[cls]()
    assert type(attack) is cls
    model, x, y, pool = _setup()
    seeds = torch.tensor([5, 9, 2, 7])

    model.train()
    model.seen = 0
    out = attack(model, x, y, seeds=seeds, pool=pool)
    assert model.training and all(m.training for m in model.modules())
    assert all(p.grad is None for p in model.parameters())
    evaluations = attack.last_stats["model_evaluations"]
    assert evaluations == model.seen
    assert evaluations == 0 if cls in MODEL_FREE else evaluations > 0

    assert out.shape == x.shape and out.dtype == x.dtype
    assert out.min() >= 0.0 and out.max() <= 1.0
    if attack.ball is not None:
        distance = attack.ball.distance(x, out)
        assert (distance <= attack.ball.eps * (1 + 1e-5) + 1e-6).all(), distance

    model.eval()
    again = attack(model, x, y, seeds=seeds, pool=pool)
    assert not model.training and not any(m.training for m in model.modules())
    assert torch.equal(again, out)  # same seeds, same output (whatever mode it found)

    alone = attack(model, x[:1], y[:1], seeds=seeds[:1], pool=pool)
    torch.testing.assert_close(alone, out[:1], rtol=1e-5, atol=1e-6)


def test_every_case_is_an_exported_attack() -> None:
    assert sorted([*CASES, *ELSEWHERE], key=lambda cls: cls.__name__) == EXPORTED
