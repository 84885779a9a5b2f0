"""Common corruptions: package equivalence, wrong-logit selection, determinism, grayscale."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from imagecorruptions import corrupt
from torch import nn

from llrnet.attacks.corruptions import CHALLENGE_CORRUPTIONS, CommonCorruptions, corrupt_image

pytestmark = pytest.mark.usefixtures("one_thread")


FAST = ("gaussian_noise", "contrast", "pixelate", "gaussian_blur", "brightness", "spatter")


class BrightnessModel(nn.Module):
    """logit[0] = 5 * mean, logit[1] = mean: for label 0 the wrong-class logit and the
    margin (wrong - true = -4 mean) prefer opposite corruptions."""

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        m = x.mean(dim=(1, 2, 3))
        return torch.stack([5 * m, m], dim=1)


def test_challenge_list_is_the_reference_order() -> None:
    assert len(CHALLENGE_CORRUPTIONS) == 17
    assert CHALLENGE_CORRUPTIONS[0] == "gaussian_noise"
    assert CHALLENGE_CORRUPTIONS[4] == "glass_blur"
    assert CHALLENGE_CORRUPTIONS[-1] == "saturate"
    assert "snow" not in CHALLENGE_CORRUPTIONS and "frost" not in CHALLENGE_CORRUPTIONS


def test_matches_the_package_with_the_same_seed() -> None:
    img = (np.random.RandomState(0).rand(32, 32, 3) * 255).astype(np.uint8)
    names = ("gaussian_noise", "shot_noise", "contrast", "jpeg_compression")
    ours = corrupt_image(img, names, 1, [11, 12, 13, 14])
    for k, name in enumerate(names):
        np.random.seed(11 + k)
        np.testing.assert_array_equal(ours[k], corrupt(img, corruption_name=name, severity=1))


def test_selects_largest_wrong_class_logit_not_margin() -> None:
    x = torch.rand(3, 3, 32, 32) * 0.8 + 0.1
    y = torch.zeros(3, dtype=torch.int64)
    attack = CommonCorruptions(FAST, workers=0)
    out = attack(BrightnessModel(), x, y, seeds=0)
    candidates = attack.corrupt(x, [0, 1, 2])
    brightness = candidates.mean(dim=(2, 3, 4))  # [N, K]
    expected = candidates[torch.arange(3), brightness.argmax(dim=1)]
    torch.testing.assert_close(out, expected)
    assert not torch.equal(brightness.argmax(dim=1), brightness.argmin(dim=1))
    assert attack.last_stats["model_evaluations"] == 3 * len(FAST)
    # 8-bit in and out.
    torch.testing.assert_close(out * 255, torch.round(out * 255))


def test_ties_pick_the_first_corruption() -> None:
    x = torch.rand(2, 3, 32, 32)
    y = torch.tensor([0, 1])
    constant = nn.Sequential(nn.Flatten(), nn.Linear(3 * 32 * 32, 2))
    nn.init.zeros_(constant[1].weight)
    attack = CommonCorruptions(("contrast", "pixelate", "gaussian_blur"), workers=0)
    out = attack(constant, x, y)
    torch.testing.assert_close(out, attack.corrupt(x, [0, 1])[:, 0])


def test_deterministic_and_batch_invariant() -> None:
    x = torch.rand(4, 3, 32, 32)
    y = torch.tensor([0, 1, 1, 0])
    model = nn.Sequential(nn.Conv2d(3, 2, 3), nn.AdaptiveAvgPool2d(1), nn.Flatten())
    attack = CommonCorruptions(("gaussian_noise", "shot_noise", "impulse_noise", "spatter"),
                               workers=0)
    seeds = torch.tensor([7, 8, 9, 10])
    a = attack(model, x, y, seeds=seeds)
    torch.testing.assert_close(attack(model, x, y, seeds=seeds), a)
    torch.testing.assert_close(attack(model, x[1:2], y[1:2], seeds=seeds[1:2]), a[1:2])
    assert not torch.equal(attack(model, x, y, seeds=seeds + 100), a)


def test_grayscale_is_stacked_and_averaged_back() -> None:
    x = torch.rand(2, 1, 28, 28)
    attack = CommonCorruptions(("contrast", "motion_blur"), workers=0)
    gray = attack.corrupt(x, [0, 1])
    rgb = attack.corrupt(x.expand(2, 3, 28, 28), [0, 1])
    assert gray.shape == (2, 2, 1, 28, 28)
    torch.testing.assert_close(gray, rgb.mean(dim=2, keepdim=True))


@pytest.mark.slow
def test_all_seventeen_run_on_28px_digits() -> None:
    """glass_blur compiles numba code on its first use in a process (about 10 s)."""
    x = torch.rand(2, 1, 28, 28)
    y = torch.tensor([0, 1])
    model = nn.Sequential(nn.Flatten(), nn.Linear(28 * 28, 2))
    attack = CommonCorruptions(workers=0)
    a = attack(model, x, y, seeds=5)
    assert attack.last_stats["model_evaluations"] == 2 * 17
    assert a.shape == x.shape and a.min() >= 0 and a.max() <= 1
    torch.testing.assert_close(attack(model, x, y, seeds=5), a)


@pytest.mark.slow
def test_worker_processes_give_the_same_result() -> None:
    x = torch.rand(3, 3, 32, 32)
    y = torch.tensor([0, 1, 0])
    model = nn.Sequential(nn.Flatten(), nn.Linear(3 * 32 * 32, 2))
    parallel = CommonCorruptions(FAST, workers=1)  # one spawned process: cheaper, same check
    try:
        b = parallel(model, x, y, seeds=5)
    finally:
        parallel.close()
    torch.testing.assert_close(CommonCorruptions(FAST, workers=0)(model, x, y, seeds=5), b)
