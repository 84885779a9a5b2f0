"""Classifiers built on a trunk: the bird-or-bicycle model and the ImageNet model.
More: docs/models.md, "llrnet.models.classifier"."""

from __future__ import annotations

from typing import Any

import torch
from torch import nn

from llrnet.core.errors import InputError
from llrnet.models import layout
from llrnet.models.heads import SIGMOID_BIRD_HEAD, SigmoidBirdHead
from llrnet.models.layers import ScaleToSymmetric
from llrnet.models.preprocessing import CropResizeScale


class BirdOrBicycleClassifier(nn.Module):
    """Images [N, 3, H, W] in [0, 1] -> raw head logits [N, 2].

    Args:
        trunk: maps preprocessed images to latents [N, latent_dim, 1, 1].
        latent_dim: channels of the latents (2048 for ResNet-152).
        preprocess: apply the submission's crop/resize/``2x - 1``; False for
            callers that feed already-preprocessed inputs in [-1, 1].
        crop_fraction: central crop kept per side.
    """

    #: The class's head: channel 1 of ``linear`` is the bird logit (see ``llrnet.models.heads``).
    output_head: SigmoidBirdHead = SIGMOID_BIRD_HEAD

    def __init__(
        self,
        trunk: nn.Module,
        latent_dim: int,
        *,
        preprocess: bool = True,
        crop_fraction: float = 0.875,
    ) -> None:
        super().__init__()
        self.preprocess = CropResizeScale(crop_fraction, enabled=preprocess)
        self.trunk = trunk
        self.linear = nn.Conv2d(latent_dim, 2, kernel_size=1, bias=True)

    def latents(self, x: torch.Tensor) -> torch.Tensor:
        """[N, 3, H, W] in [0, 1] -> latents [N, latent_dim, 1, 1]."""
        return self.trunk(self.preprocess(x))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """[N, 3, H, W] in [0, 1] -> raw logits [N, 2] (only column 1 is meaningful).

        Raises:
            InputError: ``x`` is of another float dtype than the weights (outside
                ``torch.autocast``), or holds NaN or values off the [0, 1] scale.
        """
        weights = self.linear.weight.dtype
        if x.dtype != weights and not torch.is_autocast_enabled(x.device.type):
            raise InputError(f"the images are {x.dtype} but the model's weights are {weights}; "
                             f"convert the images (x.to({weights})) or the model")
        return self.linear(self.latents(x)).flatten(1)

    def bird_logit(self, x: torch.Tensor) -> torch.Tensor:
        """The bird logit ``l`` [N]; ``sigmoid(l)`` is the bird probability."""
        return self.output_head.bird_logit(self.forward(x))

    def bird_probability(self, x: torch.Tensor) -> torch.Tensor:
        """P(bird) [N] in [0, 1]."""
        return torch.sigmoid(self.bird_logit(x))

    def two_class_logits(self, x: torch.Tensor) -> torch.Tensor:
        """The challenge view [N, 2]: ``[relu(-l), relu(l)]`` (0 bicycle, 1 bird)."""
        return self.output_head.challenge_logits(self.forward(x))

    def import_structure(self) -> dict[str, Any]:
        """The trunk's structural facts (:mod:`llrnet.models.layout`)."""
        return layout.importable(self.trunk).import_structure()

    def import_layout(self, network: layout.Network, prefix: str = "") -> layout.Layout:
        """The trunk's under ``trunk.``; the head (the separate linear module) into
        the 1x1 convolution ``linear``."""
        if network.head is None:
            raise InputError("the bird-or-bicycle head is filled from the linear module")
        trunk = layout.importable(self.trunk).import_layout(network, f"{prefix}trunk.")
        return trunk.with_targets(layout.conv(network.head, f"{prefix}linear"))



class ImageNetClassifier(nn.Module):
    """Images [N, 3, H, W] in [0, 1] -> logits [N, num_classes] via ``2x - 1``.

    The sibling module ``local-linearity/imagenet/1``: trunk on ``2x - 1``, then a
    linear layer on the pooled latents.
    """

    def __init__(self, trunk: nn.Module, latent_dim: int, num_classes: int = 1000) -> None:
        super().__init__()
        self.scale = ScaleToSymmetric()
        self.trunk = trunk
        self.fc = nn.Linear(latent_dim, num_classes)

    def latents(self, x: torch.Tensor) -> torch.Tensor:
        """[N, 3, H, W] in [0, 1] -> latents [N, latent_dim, 1, 1]."""
        return self.trunk(self.scale(x))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """[N, 3, H, W] in [0, 1] -> logits [N, num_classes]."""
        return self.fc(self.latents(x).flatten(1))

    def import_structure(self) -> dict[str, Any]:
        """The trunk's structural facts (:mod:`llrnet.models.layout`)."""
        return layout.importable(self.trunk).import_structure()

    def import_layout(self, network: layout.Network, prefix: str = "") -> layout.Layout:
        """The trunk's under ``trunk.``; the module's head into ``fc``."""
        if network.head is None:
            raise InputError("an ImageNet classifier is filled with its classification head")
        trunk = layout.importable(self.trunk).import_layout(network, f"{prefix}trunk.")
        return trunk.with_targets(layout.linear(network.head, f"{prefix}fc"))
