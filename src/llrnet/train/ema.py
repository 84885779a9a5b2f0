"""Exponential moving average of a model's weights. More: docs/training.md, "llrnet.train.ema"."""

from __future__ import annotations

import copy

import torch
from torch import nn

from llrnet.core.errors import UsageError


class ModelEMA:
    """An averaged copy of ``model`` (same architecture, eval mode, no gradients).

    Example::

        ema = ModelEMA(model, decay=0.999)
        ...; optimizer.step(); ema.update(model)
        evaluate(ema.module)
    """

    def __init__(self, model: nn.Module, decay: float) -> None:
        if not 0.0 < decay < 1.0:
            raise UsageError(f"EMA decay must be in (0, 1), got {decay}")
        self.decay = decay
        self.module = copy.deepcopy(model).eval()
        for parameter in self.module.parameters():
            parameter.requires_grad_(False)
        self._parameter_names = {name for name, _ in self.module.named_parameters()}

    @torch.no_grad()
    def update(self, model: nn.Module) -> None:
        """Move the average towards ``model``'s current weights."""
        averaged = self.module.state_dict()
        for name, value in model.state_dict().items():
            target = averaged[name]
            if target.dtype.is_floating_point and name in self._parameter_names:
                target.lerp_(value.detach(), 1.0 - self.decay)
            else:
                target.copy_(value)

    def state_dict(self) -> dict[str, torch.Tensor]:
        """The averaged weights and buffers."""
        return {k: v.detach().clone() for k, v in self.module.state_dict().items()}

    def load_state_dict(self, state: dict[str, torch.Tensor]) -> None:
        """Restore averaged weights saved by :meth:`state_dict`."""
        self.module.load_state_dict(state, strict=True)
