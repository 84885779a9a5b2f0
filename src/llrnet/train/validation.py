"""Periodic evaluation during training: clean and L-inf PGD accuracy on held-out images."""

from __future__ import annotations

import torch
from torch import Tensor, nn

from llrnet.attacks import PGD
from llrnet.core.modes import kept_as_given
from llrnet.models.heads import challenge_view
from llrnet.train.config import EvalConfig


def robust_accuracy(model: nn.Module, images: Tensor, labels: Tensor, config: EvalConfig,
                    *, device: torch.device) -> dict[str, float]:
    """``{"clean_accuracy", "pgd_accuracy"}`` of ``model`` on ``images`` (in [0, 1]).

    PGD: ``config.steps`` L-inf steps of size ``config.step_size`` (default
    ``2.5 * eps / steps``) with random start, seeded per image (seed = index).
    Accuracies are those of the model's challenge view
    (:func:`llrnet.models.challenge_view`: the two-class logits of a sigmoid
    bird head). The model comes back as given (every submodule's mode).
    """
    view = challenge_view(model)
    step_size = config.step_size if config.step_size is not None else (
        2.5 * config.eps / max(config.steps, 1))
    attack = PGD(eps=config.eps, steps=config.steps, step_size=step_size, loss=config.loss)
    clean = robust = 0
    with kept_as_given(model):  # every submodule's mode, as given
        model.eval()
        for start in range(0, len(labels), config.batch_size):
            x = images[start:start + config.batch_size].to(device)
            y = labels[start:start + config.batch_size].to(device)
            with torch.no_grad():
                clean += int((view(x).argmax(1) == y).sum())
            if config.eps > 0 and config.steps > 0:
                x_adv = attack(view, x, y, seeds=start)
                with torch.no_grad():
                    robust += int((view(x_adv).argmax(1) == y).sum())
            else:
                robust = clean
    n = max(len(labels), 1)
    return {"clean_accuracy": clean / n, "pgd_accuracy": robust / n}
