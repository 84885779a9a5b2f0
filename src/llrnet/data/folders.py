"""ImageNet (ImageFolder layout) and CIFAR-10, as float tensors in [0, 1].
More: docs/data.md, "llrnet.data.folders"."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import torch
from torch import Tensor
from torch.utils.data import Dataset

from llrnet.core.errors import InputError, UsageError
from llrnet.data.robust import ImageFileDataset, Transform
from llrnet.data.transforms import (
    cifar_train_transform,
    imagenet_eval_transform,
    imagenet_train_transform,
)

CIFAR10_URL = "https://www.cs.toronto.edu/~kriz/cifar-10-binary.tar.gz"
CIFAR10_MD5 = "c32a1d4ab5d03f1284b67883e8d87530"
CIFAR10_FOLDER = "cifar-10-batches-bin"
CIFAR10_CLASSES = ("airplane", "automobile", "bird", "cat", "deer",
                   "dog", "frog", "horse", "ship", "truck")
_CIFAR_FILES = {"train": [f"data_batch_{i}.bin" for i in range(1, 6)],
                "test": ["test_batch.bin"]}
_RECORD = 1 + 3 * 32 * 32


class ImageFolderDataset(ImageFileDataset):
    """An :class:`ImageFileDataset` built from a class-per-folder tree.

    Attributes:
        classes: folder names in label order (sorted).
    """

    def __init__(
        self,
        samples: list[tuple[str, int]],
        classes: list[str],
        transform: Transform | None,
        *,
        strict: bool = False,
    ) -> None:
        super().__init__(samples, transform, strict=strict)
        self.classes = tuple(classes)


def imagenet(
    root: str | Path,
    split: str,
    *,
    image_size: int = 224,
    transform: Transform | None = None,
    strict: bool = False,
) -> ImageFolderDataset:
    """ImageNet from ``<root>/<split>/<class>/...`` with the standard transforms.

    ``split`` "train" uses RandomResizedCrop + flip, "val" Resize + CenterCrop
    (see :mod:`llrnet.data.transforms`); pass ``transform`` to override.
    Unreadable files are skipped with a warning (or raise with ``strict=True``).

    Raises:
        FileNotFoundError: ``<root>/<split>`` does not exist or has no class folders.
    """
    # deferred: heavy (torchvision.datasets)
    from torchvision.datasets.folder import IMG_EXTENSIONS, find_classes, make_dataset

    if split not in ("train", "val"):
        raise UsageError(f"unknown ImageNet split {split!r}; choose 'train' or 'val'")
    folder = Path(root).expanduser() / split
    if not folder.is_dir():
        raise FileNotFoundError(f"ImageNet {split} folder not found: {folder} "
                                "(expected <root>/<split>/<class>/<image>)")
    try:
        classes, class_to_idx = find_classes(str(folder))
    except FileNotFoundError as error:
        raise FileNotFoundError(f"no class folders in {folder}: {error}") from None
    samples = make_dataset(str(folder), class_to_idx, extensions=IMG_EXTENSIONS)
    if transform is None:
        transform = (imagenet_train_transform(image_size) if split == "train"
                     else imagenet_eval_transform(image_size))
    return ImageFolderDataset(samples, classes, transform, strict=strict)


class CIFAR10(Dataset[tuple[Tensor, int]]):
    """CIFAR-10 in memory: ``(image [3, 32, 32] float in [0, 1], label int)``.

    Args:
        root: folder holding ``cifar-10-batches-bin`` (or the archive).
        split: "train" (50,000 images) or "test" (10,000).
        augment: apply the LLR paper's augmentation (flip, reflect-pad 4,
            random 32 crop); default: on for "train", off for "test".
        download: fetch the archive when no local copy exists.
        url, md5: where to fetch it from and its checksum (mirrors, tests).

    Attributes:
        pixels: uint8 ``[N, 3, 32, 32]`` (deliberately not named ``images``: they
            are not float images in [0, 1]; use ``dataset[i]``).
        targets: int64 ``[N]``.
    """

    classes = CIFAR10_CLASSES

    def __init__(
        self,
        root: str | Path,
        split: str = "train",
        *,
        augment: bool | None = None,
        download: bool = False,
        url: str = CIFAR10_URL,
        md5: str = CIFAR10_MD5,
    ) -> None:
        if split not in _CIFAR_FILES:
            raise UsageError(f"unknown CIFAR-10 split {split!r}; choose 'train' or 'test'")
        root = Path(root).expanduser()
        folder = _locate_cifar(root, download=download, url=url, md5=md5)
        arrays = [_read_cifar_file(folder / name) for name in _CIFAR_FILES[split]]
        self.pixels = torch.from_numpy(np.concatenate([a[0] for a in arrays]))
        self.targets = torch.from_numpy(np.concatenate([a[1] for a in arrays]))
        self.split = split
        augment = split == "train" if augment is None else augment
        self.transform = cifar_train_transform() if augment else None

    def __len__(self) -> int:
        return int(self.targets.shape[0])

    def __getitem__(self, index: int) -> tuple[Tensor, int]:
        """``(image [3, 32, 32] float in [0, 1], label)``, augmented if enabled."""
        image = self.pixels[index].to(torch.float32) / 255.0
        if self.transform is not None:
            image = self.transform(image)
        return image, int(self.targets[index])


def cifar10(
    root: str | Path, split: str = "train", *, augment: bool | None = None,
    download: bool = False,
) -> CIFAR10:
    """``CIFAR10(root, split, ...)`` as a function, like :func:`imagenet`."""
    return CIFAR10(root, split, augment=augment, download=download)


def _locate_cifar(root: Path, *, download: bool, url: str, md5: str) -> Path:
    """The extracted ``cifar-10-batches-bin`` folder, extracting/downloading as needed."""
    from torchvision.datasets.utils import (  # deferred: heavy (torchvision.datasets)
        check_integrity,
        download_and_extract_archive,
        extract_archive,
    )

    folder = root / CIFAR10_FOLDER
    if all((folder / f).is_file() for files in _CIFAR_FILES.values() for f in files):
        return folder
    archive = root / url.rsplit("/", 1)[-1]
    if archive.is_file():
        if not check_integrity(str(archive), md5):
            raise InputError(f"{archive} does not match its MD5 {md5}; delete it and retry")
        extract_archive(str(archive), str(root))
    elif download:
        try:
            download_and_extract_archive(url, str(root), md5=md5)
        except (OSError, RuntimeError) as error:
            raise InputError(f"could not download CIFAR-10 from {url}: {error}; "
                             f"put {archive.name} or {CIFAR10_FOLDER}/ under {root}") from None
    else:
        raise FileNotFoundError(
            f"CIFAR-10 not found under {root}: put {archive.name} or {CIFAR10_FOLDER}/ "
            "there, or pass download=True")
    if not folder.is_dir():
        raise InputError(f"{archive.name} did not contain {CIFAR10_FOLDER}/")
    return folder


def _read_cifar_file(path: Path) -> tuple[np.ndarray, np.ndarray]:
    """One binary batch: records of 1 label byte + 3,072 pixel bytes (R, G, B planes)."""
    if not path.is_file():
        raise FileNotFoundError(f"CIFAR-10 file missing: {path}")
    raw = np.fromfile(path, dtype=np.uint8)
    if raw.size == 0 or raw.size % _RECORD:
        raise InputError(f"{path} is not a CIFAR-10 binary batch ({raw.size} bytes)")
    records = raw.reshape(-1, _RECORD)
    labels = records[:, 0].astype(np.int64)
    if labels.max() > 9:
        raise InputError(f"{path} has labels above 9; is it CIFAR-100?")
    return records[:, 1:].reshape(-1, 3, 32, 32).copy(), labels
