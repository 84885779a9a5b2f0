"""Real handwritten digits that need no download: scikit-learn's ``load_digits``.
More: docs/data.md, "llrnet.data.digits"."""

from __future__ import annotations

from collections.abc import Sequence
from functools import lru_cache
from typing import Literal

import numpy as np
import torch
import torch.nn.functional as F
from torch import Tensor
from torch.utils.data import Dataset

from llrnet.core.errors import InputError, UsageError

Split = Literal["train", "test", "fit", "val"]
SPLITS = ("train", "test", "fit", "val")

#: Fraction of each class kept for the test split.
TEST_FRACTION = 0.3
#: Fraction of each class of the train split kept for the ``val`` split.
VAL_FRACTION = 0.2


class DigitsDataset(Dataset[tuple[Tensor, int]]):
    """Digit images held in memory.

    Attributes:
        images: float32 ``[N, 1, size, size]`` in [0, 1].
        labels: int64 ``[N]``; label ``k`` is the digit ``classes[k]``.
        classes: the digit shown by each label, in label order.
    """

    def __init__(self, images: Tensor, labels: Tensor, classes: Sequence[int]) -> None:
        if images.ndim != 4 or images.shape[1] != 1:
            raise InputError(f"images must be [N, 1, H, W], got {tuple(images.shape)}")
        if labels.shape != (images.shape[0],):
            raise InputError(
                f"labels must be [N] with N={images.shape[0]}, got {tuple(labels.shape)}"
            )
        self.images = images.to(torch.float32)
        self.labels = labels.to(torch.int64)
        self.classes = tuple(int(c) for c in classes)

    def __len__(self) -> int:
        return int(self.images.shape[0])

    def __getitem__(self, index: int) -> tuple[Tensor, int]:
        """``(image [1, size, size] float in [0, 1], label int)``."""
        return self.images[index], int(self.labels[index])

    def __repr__(self) -> str:
        size = tuple(self.images.shape[2:])
        return f"DigitsDataset(n={len(self)}, size={size}, classes={self.classes})"


@lru_cache(maxsize=1)
def _raw_digits() -> tuple[np.ndarray, np.ndarray]:
    from sklearn.datasets import load_digits  # deferred: heavy (scikit-learn)

    bunch = load_digits()
    images = np.asarray(bunch.images, dtype=np.float32) / 16.0  # [N, 8, 8] in [0, 1]
    return images, np.asarray(bunch.target, dtype=np.int64)


def _check_split(split: str) -> None:
    if split not in SPLITS:
        raise UsageError(f"unknown digits split {split!r}; choose one of {', '.join(SPLITS)}")


def _upsample(images: np.ndarray, size: int) -> Tensor:
    """``[N, 8, 8]`` in [0, 1] -> ``[N, 1, size, size]`` in [0, 1] (bilinear)."""
    tensor = torch.from_numpy(images).unsqueeze(1)
    if size != tensor.shape[-1]:
        tensor = F.interpolate(
            tensor, size=(size, size), mode="bilinear", align_corners=False, antialias=False
        )
    return tensor.clamp_(0.0, 1.0).contiguous()


def _build(split: str, size: int, classes: Sequence[int], seed: int) -> DigitsDataset:
    _check_split(split)
    if isinstance(size, bool) or not isinstance(size, int) or size < 1:
        raise UsageError(f"size must be a positive integer, got {size!r}")
    classes = tuple(int(c) for c in classes)
    if len(classes) < 2 or len(set(classes)) != len(classes):
        raise UsageError(f"classes must be at least two distinct digits, got {classes}")
    if any(c < 0 or c > 9 for c in classes):
        raise UsageError(f"classes must be digits 0..9, got {classes}")

    from sklearn.model_selection import train_test_split  # deferred: heavy (scikit-learn)

    images, targets = _raw_digits()
    keep = np.isin(targets, classes)
    images, targets = images[keep], targets[keep]
    # Label k = the digit classes[k] (class 0 = the first digit given).
    labels = np.array([classes.index(int(t)) for t in targets], dtype=np.int64)
    index = np.arange(len(targets))
    train_index, test_index = train_test_split(
        index, test_size=TEST_FRACTION, random_state=seed, stratify=labels, shuffle=True
    )
    if split in ("fit", "val"):
        fit_index, val_index = train_test_split(
            np.sort(train_index), test_size=VAL_FRACTION, random_state=seed,
            stratify=labels[np.sort(train_index)], shuffle=True)
        train_index = val_index if split == "val" else fit_index
    chosen = np.sort(test_index if split == "test" else train_index)
    return DigitsDataset(
        _upsample(images[chosen], size), torch.from_numpy(labels[chosen]), classes
    )


def two_class_digits(
    split: Split, *, size: int = 28, classes: tuple[int, int] = (6, 7), seed: int = 0
) -> DigitsDataset:
    """Two digits as a binary task: label 0 = ``classes[0]``, label 1 = ``classes[1]``.

    With the defaults (digits 6 and 7, as the challenge's MNIST warm-up) the
    train split holds 252 images and the test split 108, each ``[1, 28, 28]``.

    Example::

        data = two_class_digits("test")
        x, y = data.images, data.labels      # [108, 1, 28, 28], [108]
    """
    if len(tuple(classes)) != 2:
        raise UsageError(f"two_class_digits needs exactly two classes, got {classes!r}")
    return _build(split, size, classes, seed)


def digits(split: Split, *, size: int = 28, seed: int = 0) -> DigitsDataset:
    """All ten digits; label ``k`` is digit ``k`` (1,257 train / 540 test images)."""
    return _build(split, size, tuple(range(10)), seed)
