"""Training data: datasets by name (:data:`DATASETS`), and a deterministic sharded batch order.
More: docs/training.md, "llrnet.train.data"."""

from __future__ import annotations

from collections.abc import Callable, Iterator
from dataclasses import dataclass
from typing import Any

import torch
from torch import Tensor
from torch.utils.data import ConcatDataset, DataLoader, Dataset

from llrnet.core.errors import UsageError
from llrnet.core.registry import Registry
from llrnet.core.seeding import generator
from llrnet.data import (
    DEFAULT_ROOT,
    BirdOrBicycle,
    cifar10,
    digits,
    imagenet,
    loader_settings,
    two_class_digits,
)
from llrnet.train.augment import Augment


@dataclass
class DataConfig:
    """Where the batches come from.

    Attributes:
        name: a dataset of ``llrnet.train.data.DATASETS``: ``digits2``
            (two-class digits 6 vs 7), ``digits10``, ``cifar10``, ``imagenet``,
            ``bird_or_bicycle``.
        root: dataset folder for the datasets that live on disk.
        size: image side for the digits (pixels); ignored by the others.
        augment: batch augmentation applied on the device: ``flip_crop``
            (horizontal flip + reflect-pad 4 + random crop, CIFAR), ``crop``
            (reflect-pad + crop, no flip: digits), ``rotate_translate``
            (random rotation within ``max_rotation`` degrees and shifts within
            ``max_shift`` pixels, black fill: the challenge's spatial limits).
        pad: padding of the random crop, pixels.
        max_rotation: degrees, for ``rotate_translate``.
        max_shift: pixels at the image size seen by the model, for ``rotate_translate``.
        photometric: share of training images (0..1) whose contrast is lowered
            towards a smooth random field after ``augment``
            (:func:`llrnet.train.augment.random_contrast_field`); 0 = off.
        min_contrast: the lowest contrast factor of ``photometric`` (0..1).
        extras: bird-or-bicycle: also train on the ``extras`` split.
        eval_split: the held-out split used for periodic evaluation.
        eval_images: how many held-out images periodic evaluation uses.
        num_workers: DataLoader worker processes (0 = in the main process).
    """

    name: str = "digits2"
    root: str | None = None
    size: int = 28
    augment: Augment = "none"
    pad: int = 4
    max_rotation: float = 30.0
    max_shift: float = 18.0
    photometric: float = 0.0
    min_contrast: float = 0.3
    extras: bool = False
    eval_split: str = "test"
    eval_images: int = 512
    num_workers: int = 0


TrainEval = tuple[Dataset[Any], Dataset[Any]]

DATASETS: Registry[Callable[[DataConfig], TrainEval]] = Registry("dataset")
"""Dataset builders by name (``data.name``): ``builder(data_config) -> (train, held_out)``."""


def _fit_split(config: DataConfig) -> str:
    """The digits' training split: ``fit`` (train minus ``val``) when evaluating on ``val``."""
    return "fit" if config.eval_split == "val" else "train"


def _digits2(config: DataConfig) -> TrainEval:
    return (two_class_digits(_fit_split(config), size=config.size),  # type: ignore[arg-type]
            two_class_digits(config.eval_split, size=config.size))  # type: ignore[arg-type]


def _digits10(config: DataConfig) -> TrainEval:
    return (digits(_fit_split(config), size=config.size),  # type: ignore[arg-type]
            digits(config.eval_split, size=config.size))  # type: ignore[arg-type]


def _root(config: DataConfig, default: str | None = None) -> str:
    if config.root is not None:
        return config.root
    if default is None:
        raise UsageError(f"dataset {config.name!r} needs data.root (the folder holding it)")
    return default


def _cifar10(config: DataConfig) -> TrainEval:
    # The loop augments (data.augment: flip_crop) with its own seeded generator,
    # so the dataset's own augmentation stays off.
    root = _root(config)
    return cifar10(root, "train", augment=False), cifar10(root, config.eval_split, augment=False)


def _imagenet(config: DataConfig) -> TrainEval:
    # ImageNet's RandomResizedCrop + flip happen in the dataset's transform (workers).
    root = _root(config)
    return imagenet(root, "train"), imagenet(root, config.eval_split)


def _bird_or_bicycle(config: DataConfig) -> TrainEval:
    root = _root(config, str(DEFAULT_ROOT))
    splits = ("train", "extras") if config.extras else ("train",)
    parts = [BirdOrBicycle(root, split) for split in splits]
    train: Dataset[Any] = parts[0] if len(parts) == 1 else ConcatDataset(parts)
    return train, BirdOrBicycle(root, config.eval_split)


DATASETS.add(_digits2, name="digits2")
DATASETS.add(_digits10, name="digits10")
DATASETS.add(_cifar10, name="cifar10")
DATASETS.add(_imagenet, name="imagenet")
DATASETS.add(_bird_or_bicycle, name="bird_or_bicycle")


def build_datasets(config: DataConfig) -> TrainEval:
    """``(train, held_out)`` datasets of ``(image [C, H, W] in [0, 1], label)``."""
    return DATASETS.get(config.name)(config)


def in_memory(dataset: Dataset[Any]) -> tuple[Tensor, Tensor] | None:
    """``(images, labels)`` tensors when the dataset holds them (the digits), else None."""
    images, labels = getattr(dataset, "images", None), getattr(dataset, "labels", None)
    if isinstance(images, Tensor) and isinstance(labels, Tensor):
        return images, labels
    return None


def global_batch_indices(n: int, batch_size: int, seed: int, step: int) -> Tensor:
    """Indices of the global batch of optimizer step ``step`` (0-based), int64 [batch_size]."""
    per_epoch = n // batch_size
    if per_epoch < 1:
        raise UsageError(f"batch_size {batch_size} is larger than the training set ({n} images)")
    epoch, offset = divmod(step, per_epoch)
    order = torch.randperm(n, generator=generator(seed, "train", "epoch", epoch))
    return order[offset * batch_size:(offset + 1) * batch_size]


def shard(indices: Tensor, rank: int, world: int) -> Tensor:
    """Rank ``rank``'s contiguous slice of a global batch (``len`` divisible by ``world``)."""
    if len(indices) % world:
        raise UsageError(f"batch_size {len(indices)} is not divisible by the {world} processes")
    per_rank = len(indices) // world
    return indices[rank * per_rank:(rank + 1) * per_rank]


class ShardedBatches:
    """Batch sampler: this rank's indices for steps ``start, start + 1, ..., stop - 1``."""

    def __init__(self, n: int, batch_size: int, seed: int, start: int, stop: int,
                 rank: int = 0, world: int = 1) -> None:
        self.n, self.batch_size, self.seed = n, batch_size, seed
        self.start, self.stop, self.rank, self.world = start, stop, rank, world

    def __iter__(self) -> Iterator[list[int]]:
        for step in range(self.start, self.stop):
            indices = global_batch_indices(self.n, self.batch_size, self.seed, step)
            yield shard(indices, self.rank, self.world).tolist()

    def __len__(self) -> int:
        return max(0, self.stop - self.start)


def batches(dataset: Dataset[Any], sampler: ShardedBatches, num_workers: int = 0,
            device: str | torch.device = "cpu") -> Iterator[tuple[Tensor, Tensor]]:
    """``(x [n, C, H, W] float, y int64 [n])`` CPU batches in the sampler's order.

    In-memory datasets (the digits) are indexed directly when ``num_workers``
    is 0; otherwise a ``DataLoader`` with :func:`llrnet.data.loader_settings`
    for ``device`` (pinned memory on CUDA) and ``num_workers`` workers reads them.
    """
    memory = in_memory(dataset)
    if memory is not None and num_workers == 0:
        images, labels = memory
        for indices in sampler:
            index = torch.tensor(indices, dtype=torch.int64)
            yield images[index], labels[index]
        return
    loader = DataLoader(dataset, batch_sampler=sampler,
                        **loader_settings(device, workers=num_workers))
    for x, y in loader:
        yield x.float(), torch.as_tensor(y, dtype=torch.int64)


def held_out(dataset: Dataset[Any], count: int) -> tuple[Tensor, Tensor]:
    """The first ``count`` images of ``dataset`` as ``(images, labels)`` tensors."""
    memory = in_memory(dataset)
    n = min(count, len(dataset))  # type: ignore[arg-type]
    if memory is not None:
        return memory[0][:n], memory[1][:n]
    items = [dataset[i] for i in range(n)]
    return (torch.stack([torch.as_tensor(x) for x, _ in items]).float(),
            torch.tensor([int(y) for _, y in items], dtype=torch.int64))
