"""Datasets: the bundled digits, bird-or-bicycle, ImageNet and CIFAR-10 folders.

All datasets yield ``(image, label)`` with images as float tensors in [0, 1]
(CHW); normalization lives inside the models.
"""

from __future__ import annotations

from llrnet.data.digits import DigitsDataset, digits, two_class_digits

__all__ = ["DigitsDataset", "digits", "two_class_digits"]
