"""Optimizers and learning-rate schedules. More: docs/training.md, "llrnet.train.optim"."""

from __future__ import annotations

import math
from functools import partial

import torch
from torch import nn

from llrnet.core.errors import UsageError
from llrnet.train.config import OptimConfig

_KERNEL_LAYERS = (nn.Conv1d, nn.Conv2d, nn.Conv3d, nn.Linear)


def parameter_groups(model: nn.Module, weight_decay: float) -> list[dict[str, object]]:
    """Two groups: conv/linear kernels (decayed) and everything else (not decayed)."""
    decayed: list[torch.Tensor] = []
    decayed_ids: set[int] = set()
    for module in model.modules():
        weight = getattr(module, "weight", None)
        if (isinstance(module, _KERNEL_LAYERS) and isinstance(weight, torch.Tensor)
                and weight.requires_grad and id(weight) not in decayed_ids):
            decayed.append(weight)
            decayed_ids.add(id(weight))
    others = [p for p in model.parameters() if p.requires_grad and id(p) not in decayed_ids]
    return [
        {"params": decayed, "weight_decay": weight_decay},
        {"params": others, "weight_decay": 0.0},
    ]


def build_optimizer(model: nn.Module, config: OptimConfig) -> torch.optim.Optimizer:
    """SGD (momentum) or AdamW over ``model``'s trainable parameters."""
    groups = parameter_groups(model, config.weight_decay)
    if config.name == "sgd":
        return torch.optim.SGD(groups, lr=config.lr, momentum=config.momentum,
                               nesterov=config.nesterov)
    if config.name == "adamw":
        return torch.optim.AdamW(groups, lr=config.lr, betas=(config.betas[0], config.betas[1]))
    raise UsageError(f"unknown optimizer {config.name!r}; choose 'sgd' or 'adamw'")


def lr_factor(step: int, *, total_steps: int, schedule: str, warmup_steps: int = 0,
              milestones: tuple[int, ...] = (), decay_factor: float = 0.1,
              min_ratio: float = 0.0) -> float:
    """Multiplier of the peak learning rate used for optimizer step ``step`` (0-based).

    Linear warm-up ``(step + 1) / warmup_steps`` for the first ``warmup_steps``
    steps, then ``constant`` (1), ``step`` (``decay_factor ** #milestones <= step``)
    or ``cosine`` (from 1 towards ``min_ratio``, reached at step ``total_steps``,
    just after the last step, so no step is wasted at the minimum).
    """
    if warmup_steps > 0 and step < warmup_steps:
        return (step + 1) / warmup_steps
    if schedule == "constant":
        return 1.0
    if schedule == "step":
        return float(decay_factor ** sum(1 for m in milestones if step >= m))
    if schedule == "cosine":
        span = max(1, total_steps - warmup_steps)
        progress = min(1.0, (step - warmup_steps) / span)
        return min_ratio + (1.0 - min_ratio) * 0.5 * (1.0 + math.cos(math.pi * progress))
    raise UsageError(f"unknown schedule {schedule!r}; choose constant, step or cosine")


def build_scheduler(optimizer: torch.optim.Optimizer, config: OptimConfig,
                    total_steps: int) -> torch.optim.lr_scheduler.LambdaLR:
    """A ``LambdaLR`` following :func:`lr_factor`; call ``step()`` after each optimizer step."""
    min_ratio = config.min_lr / config.lr if config.lr > 0 else 0.0
    factor = partial(lr_factor, total_steps=total_steps, schedule=config.schedule,
                     warmup_steps=config.warmup_steps, milestones=tuple(config.milestones),
                     decay_factor=config.decay_factor, min_ratio=min_ratio)
    return torch.optim.lr_scheduler.LambdaLR(optimizer, factor)
