"""Which images an evaluation scores: by suite, and the dataset told by a folder's layout."""

from __future__ import annotations

from pathlib import Path

import pytest
import torch
from PIL import Image

from llrnet.core.errors import InputError
from llrnet.data import CIFAR10, BirdOrBicycle, evaluation_dataset
from llrnet.data.digits import DigitsDataset
from llrnet.data.evaluation import find_test_split
from llrnet.data.folders import ImageFolderDataset


def _cifar(root: Path) -> Path:
    folder = root / "cifar-10-batches-bin"
    folder.mkdir(parents=True)
    record = bytes([3]) + bytes(range(256)) * 12  # label 3, 3,072 pixel bytes
    for name in [f"data_batch_{k}.bin" for k in range(1, 6)] + ["test_batch.bin"]:
        (folder / name).write_bytes(record * 2)
    return root


def _imagenet(root: Path) -> Path:
    for wnid in ("n01", "n02"):
        (root / "val" / wnid).mkdir(parents=True)
        Image.new("RGB", (40, 30), (10, 100, 200)).save(root / "val" / wnid / "a.jpg")
    return root


def test_cifar10_is_found_first_and_is_the_plain_test_split(tmp_path: Path) -> None:
    root = _cifar(tmp_path)
    (root / "val").mkdir()  # CIFAR-10 wins over an ImageNet-looking folder
    data = find_test_split(root)
    assert isinstance(data, CIFAR10) and len(data) == 2 and data.transform is None
    image, label = data[0]
    assert label == 3 and torch.equal(image.flatten()[:256], torch.arange(256) / 255)


def test_imagenet_val_is_found(tmp_path: Path) -> None:
    data = find_test_split(_imagenet(tmp_path))
    assert isinstance(data, ImageFolderDataset) and data.classes == ("n01", "n02")
    assert data[1][0].shape == (3, 224, 224)


def test_unknown_or_missing_folders(tmp_path: Path) -> None:
    with pytest.raises(InputError, match="is not a folder"):
        find_test_split(tmp_path / "missing")
    with pytest.raises(InputError, match=r"expected CIFAR-10 \(cifar-10-batches-bin/\) or "
                                         r"ImageNet \(val/<class>/<image>\)"):
        find_test_split(tmp_path)


def test_suites_choose_their_data(tmp_path: Path) -> None:
    for suite in ("digits", "linf"):
        data = evaluation_dataset(suite)
        assert isinstance(data, DigitsDataset) and len(data) == 108  # the bundled 6 vs 7
    assert isinstance(evaluation_dataset("linf", _cifar(tmp_path / "c")), CIFAR10)
    with pytest.raises(InputError, match="uses the bundled digits"):
        evaluation_dataset("digits", tmp_path)
    with pytest.raises(InputError, match="bird-or-bicycle data not found at"):
        evaluation_dataset("bird_or_bicycle", tmp_path / "missing")
    folder = tmp_path / "birds" / "0.0.4" / "test"
    for name in ("bicycle", "bird"):
        (folder / name).mkdir(parents=True)
        Image.new("RGB", (299, 299)).save(folder / name / f"{name[:2]}{0:014x}.jpg")
    birds = evaluation_dataset("bird_or_bicycle", tmp_path / "birds")
    assert isinstance(birds, BirdOrBicycle) and len(birds) == 2
