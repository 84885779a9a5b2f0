"""Shared by the training-task tests: a tiny seeded conv net with batch norm, and
the CLI's answer to a bad task option."""

from __future__ import annotations

from pathlib import Path

import pytest
import torch
from torch import nn

from llrnet.cli import main


def tiny_bn_net(classes: int, size: int = 8) -> nn.Sequential:
    """Two conv + batch-norm + softplus layers and a linear head, seeded (``manual_seed(0)``).

    Takes [N, 1, size, size] images (``size`` even) and returns [N, classes] logits;
    built in training mode.
    """
    torch.manual_seed(0)
    return nn.Sequential(
        nn.Conv2d(1, 4, 3, padding=1), nn.BatchNorm2d(4), nn.Softplus(),
        nn.Conv2d(4, 4, 3, stride=2, padding=1), nn.BatchNorm2d(4), nn.Softplus(),
        nn.Flatten(), nn.Linear(4 * (size // 2) ** 2, classes),
    )


def train_override_error(tmp_path: Path, capsys: pytest.CaptureFixture[str], override: str,
                         preset: str = "digits_llr_adv") -> str:
    """What ``llrnet train --preset PRESET --set OVERRIDE`` writes to stderr, after
    checking that it exits 2 and creates no run folder."""
    out = tmp_path / "run"
    assert main(["train", "--preset", preset, "--set", override, "--out", str(out)]) == 2
    err = capsys.readouterr().err
    assert not out.exists()
    return err
