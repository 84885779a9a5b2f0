"""Standard (non-robust) training: the head's loss on clean images."""

from __future__ import annotations

from dataclasses import dataclass

from torch import Tensor, nn

from llrnet.models.heads import head_of
from llrnet.train.tasks.common import StepPasses, accuracy, check_batch

__all__ = ["StandardTask"]


@dataclass(frozen=True)
class StandardTask:
    """The mean loss of ``model(x)`` under the model's head (:func:`llrnet.models.head_of`).

    Softmax cross-entropy for a softmax head; binary cross-entropy on the bird
    logit for a sigmoid bird head (the bird-or-bicycle classifier; labels
    bicycle 0, bird 1).

    Returns ``{"loss", "ce", "accuracy"}`` (``ce`` is the detached loss).
    """

    def passes_per_step(self) -> StepPasses:
        """One forward-backward pass."""
        return StepPasses(1)

    def __call__(self, model: nn.Module, batch: tuple[Tensor, Tensor], step: int
                 ) -> dict[str, Tensor]:
        x, y = check_batch(batch)
        head = head_of(model)
        logits = model(x)
        loss = head.loss(logits, y)
        return {"loss": loss, "ce": loss.detach(), "accuracy": accuracy(logits, y, head)}
