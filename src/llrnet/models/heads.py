"""Heads: what a classifier's raw logits mean, and every decision that follows from it. A model
declares its head (``output_head``) and :func:`head_of` reads it through wrappers, so the loss,
predictions, attack view and challenge view are decided in one place.
More: docs/models.md, "llrnet.models.heads"."""

from __future__ import annotations

from dataclasses import dataclass

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from llrnet.core.errors import UsageError

BICYCLE = 0
"""Challenge label of bicycles (column 0 of the two-class logits)."""
BIRD = 1
"""Challenge label of birds (column 1 of the two-class logits)."""

HEAD_ATTRIBUTE = "output_head"
"""The attribute through which a model declares its head."""


def two_class_from_bird_logit(logit: Tensor) -> Tensor:
    """[N] bird logits -> [N, 2] challenge logits ``[relu(-l), relu(l)]``.

    The confidence (max logit) is ``|l|`` and a zero logit is a tie, which the
    challenge scores as bicycle.
    """
    return torch.stack([F.relu(-logit), F.relu(logit)], dim=1)


class Head:
    """How raw logits [N, K] are trained, read and shown to the challenge.

    Subclasses define every method; heads are immutable and hold no tensors,
    so one instance can be shared by any number of models.
    """

    def per_example_loss(self, logits: Tensor, y: Tensor) -> Tensor:
        """The training loss of each example [N] (labels int64 [N])."""
        raise NotImplementedError

    def loss(self, logits: Tensor, y: Tensor) -> Tensor:
        """The batch-mean training loss (a scalar)."""
        return self.per_example_loss(logits, y).mean()

    def predict(self, logits: Tensor) -> Tensor:
        """Predicted classes [N] int64."""
        raise NotImplementedError

    def with_margin(self, logits: Tensor, y: Tensor, margin: float) -> Tensor:
        """``logits`` [N, K] moved ``margin`` (logit units, >= 0) against the true class.

        The loss of the result is a large-margin loss: it keeps pushing until
        the true class wins by ``margin``, where the plain loss is already
        small once it wins at all. Predictions are not meant to be read from it.
        """
        raise NotImplementedError

    def log_probs(self, logits: Tensor) -> Tensor:
        """Log class probabilities [N, C] (what TRADES' KL compares)."""
        raise NotImplementedError

    def attack_view(self, model: nn.Module) -> nn.Module:
        """The module a training attack sees: its softmax cross-entropy is this loss."""
        raise NotImplementedError

    def challenge_view(self, model: nn.Module) -> nn.Module:
        """The module whose logits are the challenge's contract (argmax, max confidence)."""
        raise NotImplementedError


@dataclass(frozen=True)
class SoftmaxHead(Head):
    """Logits [N, K] through a softmax: cross-entropy, argmax; the views are the model."""

    def per_example_loss(self, logits: Tensor, y: Tensor) -> Tensor:
        return F.cross_entropy(logits, y, reduction="none")

    def loss(self, logits: Tensor, y: Tensor) -> Tensor:
        return F.cross_entropy(logits, y)

    def predict(self, logits: Tensor) -> Tensor:
        return logits.argmax(dim=1)

    def with_margin(self, logits: Tensor, y: Tensor, margin: float) -> Tensor:
        """The true class's logit lowered by ``margin`` (an additive-margin softmax)."""
        return logits - margin * F.one_hot(y, logits.shape[1]).to(logits.dtype)

    def log_probs(self, logits: Tensor) -> Tensor:
        return F.log_softmax(logits, dim=1)

    def attack_view(self, model: nn.Module) -> nn.Module:
        return model

    def challenge_view(self, model: nn.Module) -> nn.Module:
        return model


@dataclass(frozen=True)
class SigmoidBirdHead(Head):
    """Column ``column`` of the raw output is the bird logit ``l``; P(bird) = sigmoid(l).

    Labels are the challenge's (bicycle 0, bird 1). ``column`` is
    :data:`BIRD` (1) for the released two-channel head, whose channel 0 is
    unused; 0 for a trunk with a single output logit.
    """

    column: int = BIRD

    def bird_logit(self, logits: Tensor) -> Tensor:
        """The bird logit ``l`` [N] of raw logits [N, K]."""
        return logits[:, self.column]

    def per_example_loss(self, logits: Tensor, y: Tensor) -> Tensor:
        """Binary cross-entropy on ``l``; the other columns get no gradient."""
        return F.binary_cross_entropy_with_logits(self.bird_logit(logits), y.to(logits.dtype),
                                                  reduction="none")

    def predict(self, logits: Tensor) -> Tensor:
        """Bird (1) iff ``l > 0``; a zero logit is a tie, scored bicycle (0)."""
        return (self.bird_logit(logits) > 0).long()

    def with_margin(self, logits: Tensor, y: Tensor, margin: float) -> Tensor:
        """``l`` moved ``margin`` towards the wrong side: ``l - margin`` for birds,
        ``l + margin`` for bicycles, so the BCE is ``softplus(margin - s * l)``
        with ``s = +1`` (bird) or ``-1`` (bicycle); the other columns unchanged."""
        sign = 2 * y.to(logits.dtype) - 1
        shifted = logits.clone()
        shifted[:, self.column] = self.bird_logit(logits) - margin * sign
        return shifted

    def log_probs(self, logits: Tensor) -> Tensor:
        """``[log(1 - sigmoid(l)), log(sigmoid(l))]`` [N, 2], stable for any ``l``."""
        z = self.bird_logit(logits)
        return torch.stack([F.logsigmoid(-z), F.logsigmoid(z)], dim=1)

    def challenge_logits(self, logits: Tensor) -> Tensor:
        """``[relu(-l), relu(l)]`` [N, 2]: the two-class logits the challenge scores."""
        return two_class_from_bird_logit(self.bird_logit(logits))

    def attack_view(self, model: nn.Module) -> nn.Module:
        return BirdLogitView(model, self)

    def challenge_view(self, model: nn.Module) -> nn.Module:
        return ChallengeView(model, self)


SOFTMAX_HEAD = SoftmaxHead()
"""The head of every model that declares none."""
SIGMOID_BIRD_HEAD = SigmoidBirdHead(column=BIRD)
"""The bird-or-bicycle classifier's head: channel 1 is the bird logit."""


def _inner(model: nn.Module) -> nn.Module | None:
    """The module inside a wrapper whose output is its module's, else None."""
    if isinstance(model, nn.parallel.DistributedDataParallel | nn.DataParallel):
        return model.module
    compiled = model._modules.get("_orig_mod")  # torch.compile's OptimizedModule
    return compiled if type(model).__name__ == "OptimizedModule" else None


def head_of(model: nn.Module) -> Head:
    """The head ``model`` declares (``output_head``), or :data:`SOFTMAX_HEAD`.

    Wrappers that pass the output through unchanged (DDP, DataParallel,
    ``torch.compile``) are seen through; views that change it
    (:class:`ChallengeView`, :class:`BirdLogitView`) declare their own head.
    """
    current: nn.Module | None = model
    while current is not None:
        head = getattr(current, HEAD_ATTRIBUTE, None)
        if head is not None:
            if not isinstance(head, Head):
                raise UsageError(f"{type(current).__name__}.{HEAD_ATTRIBUTE} must be a "
                                 f"llrnet.models.heads.Head, got {type(head).__name__}")
            return head
        current = _inner(current)
    return SOFTMAX_HEAD


def set_head(model: nn.Module, head: Head) -> nn.Module:
    """Declare ``head`` as ``model``'s head (an instance attribute) and return ``model``.

    The head is not part of the state dict, so weights files do not carry it:
    ``load_weights`` rebuilds the architecture, and only a head declared by
    the class (or set by its registered builder) comes back.
    """
    if not isinstance(head, Head):
        raise UsageError(f"head must be a llrnet.models.heads.Head, got {type(head).__name__}")
    setattr(model, HEAD_ATTRIBUTE, head)
    return model


def challenge_view(model: nn.Module) -> nn.Module:
    """The module whose logits are the challenge's contract, for any model.

    The model itself for a softmax head (its logits already are the contract),
    :class:`ChallengeView` for a sigmoid bird head. Idempotent: a view is
    returned as is.
    """
    return head_of(model).challenge_view(model)


def _sigmoid_head(model: nn.Module, head: SigmoidBirdHead | None, view: str) -> SigmoidBirdHead:
    found = head if head is not None else head_of(model)
    if not isinstance(found, SigmoidBirdHead):
        raise UsageError(
            f"{view} reads a sigmoid bird logit, but {type(model).__name__} has a "
            f"{type(found).__name__}; use llrnet.models.challenge_view(model), which "
            "passes softmax models through"
        )
    return found


class ChallengeView(nn.Module):
    """A sigmoid-bird-head model seen as the challenge's two-class classifier.

    ``forward``: [N, C, H, W] in [0, 1] -> ``[relu(-l), relu(l)]`` [N, 2]
    (column 0 bicycle, column 1 bird). Attacks and the evaluation runner take
    any ``model(x) -> logits``; this is what they see of a bird-or-bicycle
    classifier. ``head`` defaults to the model's own (:func:`head_of`).
    """

    output_head: Head = SOFTMAX_HEAD

    def __init__(self, model: nn.Module, head: SigmoidBirdHead | None = None) -> None:
        super().__init__()
        self.head = _sigmoid_head(model, head, "ChallengeView")
        self.model = model

    def forward(self, x: Tensor) -> Tensor:
        """[N, 3, H, W] in [0, 1] -> [N, 2] two-class logits."""
        return self.head.challenge_logits(self.model(x))


class BirdLogitView(nn.Module):
    """A sigmoid-bird-head model seen as ``[0, l]`` [N, 2], for training attacks.

    Softmax cross-entropy of these two logits is exactly BCE on ``l`` (the
    softmax of ``[0, l]`` is ``[1 - sigmoid(l), sigmoid(l)]``), so a
    cross-entropy attack on the view is the BCE attack on the sigmoid head.
    """

    output_head: Head = SOFTMAX_HEAD

    def __init__(self, model: nn.Module, head: SigmoidBirdHead | None = None) -> None:
        super().__init__()
        self.head = _sigmoid_head(model, head, "BirdLogitView")
        self.model = model

    def forward(self, x: Tensor) -> Tensor:
        z = self.head.bird_logit(self.model(x))
        return torch.stack([torch.zeros_like(z), z], dim=1)
