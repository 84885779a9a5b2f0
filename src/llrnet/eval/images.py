"""Uniform access to the images under evaluation: a Dataset or an (images, labels) pair.
More: docs/evaluation.md, "llrnet.eval.images"."""

from __future__ import annotations

import hashlib
from collections.abc import Sequence
from typing import Any, Protocol, runtime_checkable

import torch
from torch.utils.data import Dataset

from llrnet.core.errors import InputError


@runtime_checkable
class ImageFiles(Protocol):
    """A dataset of image files that can be checked and read without substitution
    (``llrnet.data.robust.ImageFileDataset`` is one: bird-or-bicycle, ImageNet folders)."""

    def load(self, index: int) -> tuple[Any, int]:
        """``(image [C, H, W], label)`` of ``index``; InputError if unreadable."""
        ...

    def unreadable(self, indices: Sequence[int]) -> dict[int, str]:
        """``{index: reason}`` of the files among ``indices`` that cannot be decoded."""
        ...


class ImageSource:
    """The images under evaluation, in evaluation order, addressable by dataset index.

    ``dataset`` is a ``torch.utils.data.Dataset`` yielding ``(image [C, H, W]
    float in [0, 1], label int)`` or a tuple ``(images [N, C, H, W], labels
    [N])`` of tensors. ``order`` lists the dataset indices in evaluation order:
    the dataset's own order, or with ``shuffle_seed`` the permutation a
    ``DataLoader(shuffle=True, generator=torch.Generator().manual_seed(seed))``
    visits (``llrnet.data.evaluation_loader``'s order). ``max_images`` keeps the
    first ``max_images`` of that order.

    Image files (an :class:`ImageFiles` dataset, such as
    ``llrnet.data.robust.ImageFileDataset``: bird-or-bicycle, ImageNet folders) are
    all decoded once here, before any attack, and read
    without substitution after. An unreadable file is an :class:`InputError`
    listing every such file, unless ``skip_unreadable``: then those images
    leave the order and :attr:`skipped` maps their indices to the reason, so
    the count reported is the count scored.
    """

    def __init__(self, dataset: Any, max_images: int | None = None,
                 shuffle_seed: int | None = None, skip_unreadable: bool = False) -> None:
        if max_images is not None and max_images < 1:
            raise InputError(f"max_images must be >= 1, got {max_images}")
        self._images: torch.Tensor | None = None
        self._labels: torch.Tensor | None = None
        self._dataset: Any = None
        if isinstance(dataset, tuple | list) and len(dataset) == 2:
            images, labels = (torch.as_tensor(dataset[0]), torch.as_tensor(dataset[1]))
            if images.dim() != 4:
                raise InputError(f"images must be [N, C, H, W], got shape {list(images.shape)}")
            if labels.dim() != 1 or len(labels) != len(images):
                raise InputError(
                    f"labels must be [{len(images)}] to match the images, got {list(labels.shape)}"
                )
            self._images, self._labels = images, labels.long()
            total = len(images)
        elif isinstance(dataset, Dataset) and hasattr(dataset, "__len__"):
            self._dataset = dataset
            total = len(dataset)
        else:
            raise InputError(
                "dataset must be a torch Dataset of (image, label) or an (images, labels) "
                f"tuple of tensors, got {type(dataset).__name__}"
            )
        if total == 0:
            raise InputError("the dataset is empty")
        self.total = total
        self.count = total if max_images is None else min(total, max_images)
        if shuffle_seed is None:
            self.order = list(range(self.count))
        else:
            generator = torch.Generator().manual_seed(shuffle_seed)
            self.order = torch.randperm(total, generator=generator)[: self.count].tolist()
        self.skip_unreadable = skip_unreadable
        self.skipped: dict[int, str] = {}
        self._checked: set[int] = set()
        self._drop_unreadable(self.order)
        self.order = [index for index in self.order if index not in self.skipped]
        self.count = len(self.order)
        if self.count == 0:
            raise InputError(f"none of the {len(self.skipped)} images can be read")

    def _drop_unreadable(self, indices: Sequence[int]) -> None:
        """Decode the image files among ``indices`` not yet checked; raise listing
        the unreadable ones, or (``skip_unreadable``) record them in :attr:`skipped`."""
        if not isinstance(self._dataset, ImageFiles):
            return
        fresh = sorted(set(indices) - self._checked)
        self._checked.update(fresh)
        bad = self._dataset.unreadable(fresh)
        if bad and not self.skip_unreadable:
            listing = "; ".join(reason for _, reason in sorted(bad.items())[:5])
            more = f"; and {len(bad) - 5} more" if len(bad) > 5 else ""
            raise InputError(
                f"{len(bad)} of {len(fresh)} images cannot be read ({listing}{more}); fix or "
                "remove them, or skip them explicitly (--skip-unreadable, "
                "skip_unreadable=True) to score the readable ones"
            )
        self.skipped.update(bad)

    def __len__(self) -> int:
        return self.count

    def get(self, indices: Sequence[int]) -> tuple[torch.Tensor, torch.Tensor]:
        """(images [n, C, H, W] float32, labels [n] int64) at dataset ``indices`` (CPU)."""
        for index in indices:
            if not 0 <= index < self.total:
                raise IndexError(f"image index {index} out of range [0, {self.total})")
        if self._images is not None and self._labels is not None:
            rows = torch.as_tensor(list(indices), dtype=torch.long)
            return self._images[rows].float(), self._labels[rows]
        images, labels = [], []
        files = isinstance(self._dataset, ImageFiles)
        for index in indices:
            image, label = self._dataset.load(index) if files else self._dataset[index]
            images.append(torch.as_tensor(image, dtype=torch.float32))
            labels.append(int(label))
        if len({tuple(image.shape) for image in images}) > 1:
            raise InputError("the dataset's images have different shapes; resize them first")
        return torch.stack(images), torch.tensor(labels, dtype=torch.int64)

    def pool(self, size: int) -> tuple[torch.Tensor, torch.Tensor]:
        """The first ``size`` images of the whole dataset (ignoring ``max_images``).

        The clean reference pool of attacks that start from other images
        (Boundary). It does not depend on ``max_images``, so an image's result
        does not either. With ``skip_unreadable``, unreadable images are left
        out of it (it is then smaller); otherwise one is an :class:`InputError`.
        """
        indices = range(min(size, self.total))
        self._drop_unreadable(indices)
        return self.get([index for index in indices if index not in self.skipped])

    def fingerprint(self, batch_size: int) -> str:
        """sha256 over the count and the first batch (images and labels).

        Cheap enough to compute before any work, and it catches the usual resume
        mistakes: another data folder, another split, another preprocessing.
        """
        images, labels = self.get(self.order[:batch_size])
        digest = hashlib.sha256(str(self.count).encode())
        digest.update(images.contiguous().numpy().tobytes())
        digest.update(labels.numpy().tobytes())
        return digest.hexdigest()
