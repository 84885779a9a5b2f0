"""MNIST from a local copy, and the kit's two-class MNIST (6 = class 0, 7 = class 1).
More: docs/data.md, "llrnet.data.mnist"."""

from __future__ import annotations

import gzip
import os
from pathlib import Path
from typing import Any, Literal

import numpy as np
import torch

from llrnet.core.errors import InputError
from llrnet.data.digits import DigitsDataset

Split = Literal["train", "test"]

DEFAULT_MNIST_ROOT = Path("~/datasets/mnist").expanduser()
"""Where ``llrnet eval --suite two_class_mnist`` looks without ``--data``."""

FETCH_COMMAND = ("python -c \"import torchvision; torchvision.datasets.MNIST('{root}', "
                 "train=False, download=True)\"")
"""Fetches MNIST's test split into ``root`` (torchvision's layout); format with ``root``."""

FILES = {"train": ("train-images-idx3-ubyte", "train-labels-idx1-ubyte"),
         "test": ("t10k-images-idx3-ubyte", "t10k-labels-idx1-ubyte")}
"""The idx file names of each split (images, labels)."""

TWO_CLASS_DIGITS = (6, 7)
"""The kit's two-class MNIST: digit 6 is class 0, digit 7 class 1."""

_DTYPES: dict[int, str] = {0x08: "u1", 0x09: "i1", 0x0B: ">i2", 0x0C: ">i4", 0x0D: ">f4",
                           0x0E: ">f8"}


def read_idx(path: str | os.PathLike[str]) -> np.ndarray:
    """The array in an idx file (``.gz`` read transparently).

    Format: two zero bytes, a type byte (0x08 = uint8, ...), a dimension count
    d, d big-endian uint32 sizes, then the data. Raises :class:`InputError`
    for a file that is not one (bad magic, truncated, trailing bytes).
    """
    file = Path(path)
    opener = gzip.open if file.suffix == ".gz" else open
    try:
        with opener(file, "rb") as handle:
            data = handle.read()
    except (OSError, EOFError) as error:
        raise InputError(f"{path}: cannot read ({error})") from None
    if len(data) < 4 or data[0] != 0 or data[1] != 0 or data[2] not in _DTYPES:
        raise InputError(f"{path}: not an idx file (bad magic number)")
    dtype: np.dtype[Any] = np.dtype(_DTYPES[data[2]])
    dims = data[3]
    header = 4 + 4 * dims
    if len(data) < header:
        raise InputError(f"{path}: truncated idx header")
    shape = tuple(int.from_bytes(data[4 + 4 * i: 8 + 4 * i], "big") for i in range(dims))
    expected = header + int(np.prod(shape, dtype=np.int64)) * dtype.itemsize
    if len(data) != expected:
        raise InputError(f"{path}: idx file has {len(data)} bytes, its header says {expected}")
    return np.frombuffer(data, dtype=dtype, offset=header).reshape(shape)


def find_mnist(root: str | os.PathLike[str], split: Split) -> tuple[Path, Path]:
    """Paths of ``split``'s (images, labels) idx files under ``root`` (either layout).

    Raises:
        InputError: they are not there; the message names :data:`FETCH_COMMAND`.
    """
    if split not in FILES:
        raise InputError(f"MNIST split must be one of {sorted(FILES)}, got {split!r}")
    base = Path(root).expanduser()
    for folder in (base / "MNIST" / "raw", base, base / "raw"):
        found = []
        for name in FILES[split]:
            candidates = [folder / name, folder / f"{name}.gz"]
            found.append(next((c for c in candidates if c.is_file()), None))
        if all(found):
            return found[0], found[1]  # type: ignore[return-value]
    raise InputError(
        f"MNIST {split} files ({', '.join(FILES[split])}, optionally .gz) not found under "
        f"{base} or {base / 'MNIST' / 'raw'}; llrnet does not download MNIST. Where the "
        f"internet is reachable, fetch it with: {FETCH_COMMAND.format(root=base)} "
        "(or copy the idx files there), then give that folder (--data)"
    )


def mnist(root: str | os.PathLike[str] = DEFAULT_MNIST_ROOT, split: Split = "test"
          ) -> tuple[np.ndarray, np.ndarray]:
    """MNIST's ``split``: images uint8 [N, 28, 28] and labels int64 [N] (digits 0-9)."""
    images_path, labels_path = find_mnist(root, split)
    images, labels = read_idx(images_path), read_idx(labels_path)
    if images.ndim != 3 or images.dtype != np.uint8:
        raise InputError(f"{images_path}: expected uint8 images [N, H, W], got "
                         f"{images.dtype} {list(images.shape)}")
    if labels.ndim != 1 or len(labels) != len(images):
        raise InputError(f"{labels_path}: expected {len(images)} labels, got shape "
                         f"{list(labels.shape)}")
    return images, labels.astype(np.int64)


def two_class_mnist(root: str | os.PathLike[str] = DEFAULT_MNIST_ROOT, split: Split = "test"
                    ) -> DigitsDataset:
    """The images of 6 (label 0) and 7 (label 1) of ``split``, in file order, in [0, 1].

    Images are float32 [N, 1, 28, 28], ``uint8 / 255`` (as the kit's reader).
    """
    images, labels = mnist(root, split)
    keep = np.flatnonzero(np.isin(labels, TWO_CLASS_DIGITS))
    x = torch.from_numpy(images[keep].astype(np.float32) * np.float32(1.0 / 255.0)).unsqueeze(1)
    y = torch.from_numpy((labels[keep] == TWO_CLASS_DIGITS[1]).astype(np.int64))
    return DigitsDataset(x, y, TWO_CLASS_DIGITS)
