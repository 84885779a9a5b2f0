"""Datasets: the bundled digits, bird-or-bicycle, ImageNet and CIFAR-10.
More: docs/data.md, "llrnet.data"."""

from __future__ import annotations

from llrnet.data.bird_or_bicycle import (
    DEFAULT_ROOT,
    BirdOrBicycle,
    download,
    evaluation_loader,
    verify,
)
from llrnet.data.digits import digits, two_class_digits
from llrnet.data.folders import CIFAR10, cifar10, imagenet
from llrnet.data.held_out import load_held_out
from llrnet.data.loaders import loader_settings
from llrnet.data.mnist import mnist, two_class_mnist
from llrnet.data.robust import CorruptImageWarning
from llrnet.data.transforms import (
    challenge_eval_transform,
    cifar_train_transform,
    imagenet_eval_transform,
    imagenet_train_transform,
)

__all__ = [
    "CIFAR10",
    "DEFAULT_ROOT",
    "BirdOrBicycle",
    "CorruptImageWarning",
    "challenge_eval_transform",
    "cifar10",
    "cifar_train_transform",
    "digits",
    "download",
    "evaluation_loader",
    "imagenet",
    "imagenet_eval_transform",
    "imagenet_train_transform",
    "load_held_out",
    "loader_settings",
    "mnist",
    "two_class_digits",
    "two_class_mnist",
    "verify",
]
