"""Weights files with a known answer, shared by the CLI, Hub and error-corpus tests."""

from __future__ import annotations

from pathlib import Path

import torch

from llrnet.models import create_model, save_weights


def constant_bird_weights(path: Path, bird_logit: float) -> Path:
    """Write a tiny bird-or-bicycle classifier whose bird logit is ``bird_logit`` on
    every image (the linear layer zeroed, its bias set) to ``path``; return ``path``."""
    model = create_model("llr_pretrain_adv_tiny")
    with torch.no_grad():
        model.linear.weight.zero_()
        model.linear.bias.copy_(torch.tensor([0.0, bird_logit]))
    save_weights(model, path, {"source": "oracle"})
    return path
