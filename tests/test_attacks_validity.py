"""The two-class MNIST warm-up's spatial attacks: the kit's grid rule, border and valid_check."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from torch import Tensor, nn

from llrnet.attacks.spatial import tf_spatial
from llrnet.attacks.validity import (
    CheckedRandomSpatial,
    CheckedSpatialGrid,
    checked_grid,
    ink_valid,
    kit_selection,
)
from llrnet.core.errors import UsageError


def kit_loop(xent: np.ndarray, correct: np.ndarray, valid: np.ndarray | None) -> np.ndarray:
    """The kit's SpatialGridAttack loop, transcribed (numpy, one image per row)."""
    n, count = xent.shape
    chosen = np.full(n, -1)
    max_xent = np.zeros(n)
    all_correct = np.ones(n).astype(bool)
    for t in range(count):
        cur_xent = xent[:, t].astype(np.float32).copy()
        cur_correct = correct[:, t].copy()
        if valid is not None:
            is_valid = valid[:, t]
            cur_correct |= ~is_valid
            cur_xent = cur_xent - is_valid * 1e9
        idx = (cur_xent > max_xent) & (cur_correct == all_correct)
        idx = idx | (cur_correct < all_correct)
        max_xent = np.maximum(cur_xent, max_xent)
        all_correct = cur_correct & all_correct
        chosen[idx] = t
    return chosen


@pytest.mark.parametrize("with_valid", [True, False])
def test_selection_matches_the_kits_loop(with_valid: bool) -> None:
    rng = np.random.default_rng(0)
    xent = rng.exponential(1.0, size=(300, 12)).astype(np.float32).astype(np.float64)
    correct = rng.random((300, 12)) < 0.8
    valid = rng.random((300, 12)) < 0.7
    ours = kit_selection(torch.from_numpy(xent), torch.from_numpy(correct),
                         torch.from_numpy(valid) if with_valid else None)
    assert ours.tolist() == kit_loop(xent, correct, valid if with_valid else None).tolist()


def test_selection_cases_by_hand() -> None:
    xent = torch.tensor([[0.2, 0.9, 0.5], [0.2, 0.9, 0.5], [0.2, 0.9, 0.5]], dtype=torch.float64)
    correct = torch.tensor([[True, False, False], [True, True, True], [True, True, True]])
    valid = torch.tensor([[True, True, True], [True, False, True], [True, True, True]])
    chosen = kit_selection(xent, correct, valid).tolist()
    # Row 0: the first valid misclassification (t=1) wins, a later one does not replace it.
    # Row 1: no valid misclassification: the invalid transform (t=1) is kept.
    # Row 2: every transform valid and correct: none is kept (the original image stays).
    assert chosen == [1, 1, -1]
    # Without valid_check: the misclassification of highest cross-entropy, else the highest.
    assert kit_selection(xent, correct, None).tolist() == [1, 1, 1]


def test_ink_valid_is_the_kits_ten_percent_rule() -> None:
    before = torch.ones(3, 1, 4, 4)  # ink 16
    after = torch.ones(3, 1, 4, 4)
    after[1, 0, 0, :2] = 0  # ink 14: 12.5% lost
    after[2, 0, 0, 0] = 0   # ink 15: 6.25% lost
    assert ink_valid(before, after).tolist() == [True, False, True]
    assert not ink_valid(torch.zeros(1, 1, 2, 2), torch.zeros(1, 1, 2, 2)).item()


def test_the_mnist_grid_is_dx_dy_angle() -> None:
    grid = checked_grid((10.0, 10.0, 10.0), (5, 5, 11))
    assert grid.shape == (275, 3)
    assert grid[0].tolist() == [-10.0, -10.0, -10.0]
    assert grid[1].tolist() == [-10.0, -10.0, -8.0]   # rotation varies fastest
    assert grid[11].tolist() == [-10.0, -5.0, -10.0]
    assert sorted(set(grid[:, 0].tolist())) == [-10.0, -5.0, 0.0, 5.0, 10.0]


class RightHalfInk(nn.Module):
    """Class 1 iff more ink lies right of the centre column; logits (0, 10 * (right - left))."""

    def forward(self, x: Tensor) -> Tensor:
        w = x.shape[-1]
        score = x[..., w // 2:].sum(dim=(1, 2, 3)) - x[..., : w // 2].sum(dim=(1, 2, 3))
        return torch.stack([torch.zeros_like(score), score], dim=1)


def blob(n: int) -> Tensor:
    x = torch.zeros(n, 1, 28, 28)
    x[:, :, 10:18, 11:17] = 1.0  # centred ink
    return x


def test_grid_returns_a_valid_transform_that_fools_the_oracle() -> None:
    x, y = blob(2), torch.tensor([0, 1])
    attack = CheckedSpatialGrid(batch_size=64)
    out = attack(RightHalfInk(), x, y, seeds=0)
    grid = attack.transforms
    for i in range(2):
        candidates = [tf_spatial(x[i:i + 1], grid[t:t + 1], 4) for t in range(len(grid))]
        matches = [t for t, c in enumerate(candidates)
                   if torch.allclose(c.clamp(0, 1), out[i:i + 1])]
        assert matches, "the output is one of the grid's transforms"
        t = matches[0]
        before = tf_spatial(x[i:i + 1], torch.zeros(1, 3, dtype=torch.float64), 4)
        assert ink_valid(before, candidates[t]).item()
        assert RightHalfInk()(out[i:i + 1]).argmax(1).item() != y[i].item()
        # The kit keeps the FIRST valid misclassifying transform in grid order.
        first = next(u for u, c in enumerate(candidates)
                     if ink_valid(before, c).item()
                     and RightHalfInk()(c).argmax(1).item() != y[i].item())
        assert t == first


def test_grid_results_do_not_depend_on_batching() -> None:
    x = torch.rand(3, 1, 28, 28, generator=torch.Generator().manual_seed(0))
    y = torch.tensor([0, 1, 0])
    model = RightHalfInk()
    a = CheckedSpatialGrid(batch_size=7)(model, x, y)
    b = CheckedSpatialGrid(batch_size=5000)(model, x, y)
    c = torch.cat([CheckedSpatialGrid()(model, x[i:i + 1], y[i:i + 1]) for i in range(3)])
    assert torch.equal(a, b) and torch.equal(a, c)


def test_random_spatial_redraws_until_valid() -> None:
    x = torch.zeros(4, 1, 28, 28)
    x[:, :, 2:8, 2:8] = 1.0  # ink near the corner: large moves push it out of the frame
    attack = CheckedRandomSpatial(limits=(10.0, 10.0, 10.0), border=4)
    out = attack(RightHalfInk(), x, torch.zeros(4, dtype=torch.int64), seeds=3)
    before = tf_spatial(x, torch.zeros(4, 3, dtype=torch.float64), 4)
    assert ink_valid(before, out).all()
    again = torch.cat([attack(RightHalfInk(), x[i:i + 1], torch.zeros(1, dtype=torch.int64),
                              seeds=torch.tensor([3 + i])) for i in range(4)])
    assert torch.equal(out, again)  # each image's draws come from its own stream


def test_bad_grid_arguments_are_usage_errors() -> None:
    with pytest.raises(UsageError, match="valid_check must be 'ink' or None, got 'area'"):
        CheckedSpatialGrid(valid_check="area")
    with pytest.raises(UsageError, match=r"limits and granularity must have 3 entries each"):
        CheckedSpatialGrid(limits=(10.0, 10.0), granularity=(5, 5, 11))  # type: ignore[arg-type]
