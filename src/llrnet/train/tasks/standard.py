"""Standard (non-robust) training: cross-entropy on clean images."""

from __future__ import annotations

from dataclasses import dataclass

import torch.nn.functional as F
from torch import Tensor, nn

from llrnet.train.tasks.common import accuracy, binary_cross_entropy_per_example, check_batch

__all__ = ["StandardTask"]


@dataclass(frozen=True)
class StandardTask:
    """Mean softmax cross-entropy of ``model(x)``.

    Args:
        binary: instead, binary cross-entropy on the bird logit ``logits[:, 1]``
            (the bird-or-bicycle sigmoid head; labels bicycle 0, bird 1).

    Returns ``{"loss", "ce", "accuracy"}`` (``ce`` is the detached loss).
    """

    binary: bool = False

    def __call__(self, model: nn.Module, batch: tuple[Tensor, Tensor], step: int
                 ) -> dict[str, Tensor]:
        x, y = check_batch(batch)
        logits = model(x)
        if self.binary:
            loss = binary_cross_entropy_per_example(logits, y).mean()
        else:
            loss = F.cross_entropy(logits, y)
        return {"loss": loss, "ce": loss.detach(),
                "accuracy": accuracy(logits, y, binary=self.binary)}
