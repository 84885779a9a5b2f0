"""The bird-or-bicycle dataset as a torch ``Dataset``, and a seeded loader."""

from __future__ import annotations

from pathlib import Path

import torch
from torch.utils.data import DataLoader

from llrnet.core.errors import UsageError
from llrnet.data.bird_or_bicycle.download import DEFAULT_ROOT
from llrnet.data.bird_or_bicycle.sources import CLASSES, SPLITS, VERSION
from llrnet.data.robust import ImageFileDataset, Transform
from llrnet.data.transforms import challenge_eval_transform


def split_folder(root: str | Path, split: str) -> Path:
    """``<root>/0.0.4/<split>``; ``root`` may also be the ``0.0.4`` folder itself."""
    base = Path(root).expanduser()
    if base.name != VERSION:
        base = base / VERSION
    return base / split


class BirdOrBicycle(ImageFileDataset):
    """The challenge's images: ``(image, label)`` with bicycle = 0, bird = 1.

    Samples are ordered by class (bicycle first), then by id; :attr:`ids` holds
    the OpenImages id of each sample in that order.

    Args:
        root: dataset root (the folder ``llrnet data download --root`` wrote).
        split: "test" (the evaluation set), "train" or "extras".
        transform: applied to the RGB PIL image. Default: the challenge's,
            Resize(224) bilinear to a float tensor ``[3, 224, 224]`` in [0, 1].
        strict: decode every file now and raise listing unreadable ones
            (otherwise they are skipped with a warning; see ``ImageFileDataset``).

    Raises:
        FileNotFoundError: the split folder is missing (the message names the
            command that downloads it).
    """

    classes = CLASSES

    def __init__(
        self,
        root: str | Path = DEFAULT_ROOT,
        split: str = "test",
        transform: Transform | None = None,
        *,
        strict: bool = False,
    ) -> None:
        if split not in SPLITS:
            raise UsageError(f"unknown bird-or-bicycle split {split!r}; choose from "
                             f"{', '.join(SPLITS)}")
        folder = split_folder(root, split)
        missing = [c for c in CLASSES if not (folder / c).is_dir()]
        if missing:
            raise FileNotFoundError(
                f"bird-or-bicycle {split} split not found at {folder} (no "
                f"{'/'.join(missing)} folder); download it with: "
                f"llrnet data download --root {Path(root).expanduser()} --splits {split}"
            )
        samples: list[tuple[Path, int]] = []
        self.ids: list[str] = []
        for label, name in enumerate(CLASSES):
            for path in sorted((folder / name).glob("*.jpg")):
                samples.append((path, label))
                self.ids.append(path.stem)
        self.root = folder
        self.split = split
        super().__init__(samples, transform if transform is not None
                         else challenge_eval_transform(), strict=strict)


def evaluation_loader(
    dataset: torch.utils.data.Dataset[tuple[torch.Tensor, int]],
    *,
    batch_size: int = 4,
    seed: int | None = 0,
    num_workers: int = 0,
) -> DataLoader[tuple[torch.Tensor, int]]:
    """Batches in a seeded shuffled order (the reference shuffled unseeded).

    ``seed=None`` keeps the dataset's order. The same seed always gives the
    same order, whatever the number of workers.
    """
    generator = None
    if seed is not None:
        generator = torch.Generator().manual_seed(seed)
    return DataLoader(dataset, batch_size=batch_size, shuffle=seed is not None,
                      generator=generator, num_workers=num_workers)
