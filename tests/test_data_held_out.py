"""Which images an evaluation scores: the named held-out sets, each suite's own, and the dataset
told by a folder's layout."""

from __future__ import annotations

from pathlib import Path

import pytest
import torch
from PIL import Image

from llrnet.core.errors import InputError, UsageError
from llrnet.data import CIFAR10, BirdOrBicycle, load_held_out
from llrnet.data.digits import DigitsDataset
from llrnet.data.folders import ImageFolderDataset
from llrnet.data.held_out import HELD_OUT_SETS, find_test_split
from llrnet.eval.suites import suite_dataset


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
        data = suite_dataset(suite)
        assert isinstance(data, DigitsDataset) and len(data) == 108  # the bundled 6 vs 7
    assert isinstance(suite_dataset("linf", _cifar(tmp_path / "c")), CIFAR10)
    with pytest.raises(InputError, match="uses the bundled digits"):
        suite_dataset("digits", tmp_path)
    with pytest.raises(InputError, match="bird-or-bicycle data not found at"):
        suite_dataset("bird_or_bicycle", tmp_path / "missing")
    folder = tmp_path / "birds" / "0.0.4" / "test"
    for name in ("bicycle", "bird"):
        (folder / name).mkdir(parents=True)
        Image.new("RGB", (299, 299)).save(folder / name / f"{name[:2]}{0:014x}.jpg")
    birds = suite_dataset("bird_or_bicycle", tmp_path / "birds")
    assert isinstance(birds, BirdOrBicycle) and len(birds) == 2


def test_held_out_sets_by_name(tmp_path: Path) -> None:
    assert HELD_OUT_SETS.names() == ["bird_or_bicycle", "digits", "digits_or_folder",
                                     "two_class_mnist"]
    for name in ("digits", "digits_or_folder"):
        data = load_held_out(name)
        assert isinstance(data, DigitsDataset) and len(data) == 108
    assert isinstance(load_held_out("digits_or_folder", _cifar(tmp_path / "c")), CIFAR10)
    with pytest.raises(InputError, match="uses the bundled digits"):
        load_held_out("digits", tmp_path)
    with pytest.raises(UsageError, match=r"unknown held-out set 'cifar'; valid names: "
                                         r"bird_or_bicycle, digits, digits_or_folder, "
                                         r"two_class_mnist"):
        load_held_out("cifar")
    assert all(HELD_OUT_SETS.get(name).help and "\n" not in HELD_OUT_SETS.get(name).help
               for name in HELD_OUT_SETS.names())


def test_the_data_layer_never_names_a_suite() -> None:
    """data sits below eval: the suites name their held-out sets, not the reverse."""
    import ast

    import llrnet.data.held_out as module

    tree = ast.parse(Path(module.__file__).read_text())
    imported = {node.module for node in ast.walk(tree) if isinstance(node, ast.ImportFrom)}
    assert not {m for m in imported if m and m.startswith("llrnet.eval")}
    compares = [node for node in ast.walk(tree) if isinstance(node, ast.Compare)]
    assert not [ast.unparse(node) for node in compares if "suite" in ast.unparse(node)]
