"""Image-file datasets that survive corrupt files. More: docs/data.md, "llrnet.data.robust"."""

from __future__ import annotations

import logging
import multiprocessing
import warnings
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

from PIL import Image
from torch.utils.data import Dataset

from llrnet.core.errors import InputError
from llrnet.core.fileio import open_regular_file

log = logging.getLogger(__name__)

Transform = Callable[[Image.Image], Any]

#: File endings treated as images when scanning folders.
IMAGE_EXTENSIONS = (".jpg", ".jpeg", ".png", ".bmp", ".ppm", ".webp", ".tif", ".tiff")


class CorruptImageWarning(UserWarning):
    """An image file could not be read and was skipped."""


def load_rgb(path: str | Path) -> Image.Image:
    """Decode the image at ``path`` completely and return it as RGB.

    Raises:
        OSError: the file is missing, not a regular file (a FIFO or a device is
            refused without reading, :func:`llrnet.core.fileio.open_regular_file`),
            truncated or not an image.
    """
    with open_regular_file(path) as handle, Image.open(handle) as image:
        image.load()
        return image.convert("RGB")


def find_unreadable(paths: Sequence[str | Path]) -> dict[str, str]:
    """``{path: reason}`` for every file that cannot be decoded (full decode)."""
    bad: dict[str, str] = {}
    for path in paths:
        try:
            load_rgb(path)
        except (OSError, SyntaxError, ValueError, Image.DecompressionBombError) as error:
            bad[str(path)] = f"{type(error).__name__}: {error}"
    return bad


class ImageFileDataset(Dataset[tuple[Any, int]]):
    """``(transform(image), label)`` for a list of ``(path, label)`` samples.

    Args:
        samples: image files and their integer labels.
        transform: applied to the RGB PIL image; None returns the PIL image.
        strict: check every file now and raise listing the unreadable ones;
            otherwise unreadable files are skipped with a warning at load time.
        max_skip: give up (raise) after this many consecutive unreadable files,
            which means the folder itself is broken.
    """

    def __init__(
        self,
        samples: Sequence[tuple[str | Path, int]],
        transform: Transform | None = None,
        *,
        strict: bool = False,
        max_skip: int = 50,
    ) -> None:
        self.samples = [(str(p), int(y)) for p, y in samples]
        self.transform = transform
        self.strict = strict
        self.max_skip = max_skip
        # Shared memory: worker processes increment the same counter.
        self._skipped = multiprocessing.Value("i", 0)
        self._warned: set[str] = set()
        if strict:
            bad = find_unreadable([p for p, _ in self.samples])
            if bad:
                listing = "; ".join(f"{p} ({r})" for p, r in sorted(bad.items())[:20])
                more = f" and {len(bad) - 20} more" if len(bad) > 20 else ""
                raise InputError(f"{len(bad)} unreadable image(s): {listing}{more}")

    @property
    def targets(self) -> list[int]:
        """Labels in sample order."""
        return [y for _, y in self.samples]

    @property
    def skipped(self) -> int:
        """How many times an unreadable file was skipped (across worker processes)."""
        return int(self._skipped.value)

    def __len__(self) -> int:
        return len(self.samples)

    def load(self, index: int) -> tuple[Any, int]:
        """``(transform(image), label)`` of sample ``index``, with no substitution.

        For evaluation, where scoring the next image in place of an unreadable
        one would be a silent substitution.

        Raises:
            InputError: the file cannot be decoded (the message names it).
        """
        path, label = self.samples[index]
        try:
            image = load_rgb(path)
        except (OSError, SyntaxError, ValueError, Image.DecompressionBombError) as error:
            raise InputError(f"unreadable image {path}: {error}") from None
        return (self.transform(image) if self.transform else image), label

    def unreadable(self, indices: Sequence[int]) -> dict[int, str]:
        """``{index: "path: reason"}`` for each sample in ``indices`` that cannot
        be decoded (a full decode of each file)."""
        paths = {index: self.samples[index][0] for index in indices}
        bad = find_unreadable(list(paths.values()))
        return {index: f"{path}: {bad[path]}" for index, path in paths.items() if path in bad}

    def __getitem__(self, index: int) -> tuple[Any, int]:
        """``(transform(image), label)``; an unreadable file yields the next readable one."""
        n = len(self.samples)
        for step in range(min(self.max_skip, n)):
            path, label = self.samples[(index + step) % n]
            try:
                image = load_rgb(path)
            except (OSError, SyntaxError, ValueError, Image.DecompressionBombError) as error:
                if self.strict:
                    raise InputError(f"unreadable image {path}: {error}") from None
                self._note_skip(path, error)
                continue
            return (self.transform(image) if self.transform else image), label
        raise InputError(
            f"{min(self.max_skip, n)} consecutive unreadable images starting at "
            f"{self.samples[index][0]}; is the dataset folder damaged?"
        )

    def _note_skip(self, path: str, error: BaseException) -> None:
        with self._skipped.get_lock():
            self._skipped.value += 1
        if path not in self._warned:
            self._warned.add(path)
            warnings.warn(f"skipping unreadable image {path}: {error}",
                          CorruptImageWarning, stacklevel=3)

