"""torch.hub entry points: DeepMind's released models, converted by llrnet.

    model = torch.hub.load("<this repository or a local clone>", "llr_pretrain_adv",
                           pretrained=True)   # source="local" for a local clone

``pretrained=True`` fetches the TF-Hub module(s) once, converts them (no
TensorFlow needed) and caches the weights under ``$LLRNET_CACHE``
(``~/.cache/llrnet``); ``pretrained=False`` builds the architecture untrained.
"""

from __future__ import annotations

import sys
from pathlib import Path
from typing import Any

dependencies = ["torch", "numpy", "safetensors", "requests", "tqdm", "tensorboard"]

try:
    import llrnet  # noqa: F401  (an installed llrnet)
except ImportError:  # a plain clone: use its sources
    sys.path.insert(0, str(Path(__file__).resolve().parent / "src"))

from llrnet.pretrained import create_model  # noqa: E402


def llr_pretrain_adv(pretrained: bool = False, **kwargs: Any) -> Any:
    """DeepMind's bird-or-bicycle classifier (``deepmind/llr-pretrain-adv``): [N, 3, 224, 224]
    images in [0, 1] -> [N, 2] head logits (column 1: the bird logit)."""
    return create_model("llr_pretrain_adv", pretrained=pretrained, **kwargs)


def resnet152_v2_imagenet(pretrained: bool = False, **kwargs: Any) -> Any:
    """``deepmind/local-linearity/imagenet/1``: ResNet-152 v2, [0, 1] images -> 1000 logits."""
    return create_model("resnet152_v2_imagenet", pretrained=pretrained, **kwargs)


def wrn_40_8_softplus(pretrained: bool = False, **kwargs: Any) -> Any:
    """``deepmind/local-linearity/cifar10/1``: WRN-40-8 softplus, [0, 1] CIFAR-10 images ->
    10 logits."""
    return create_model("wrn_40_8_softplus", pretrained=pretrained, **kwargs)
