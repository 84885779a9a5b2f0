"""The MNIST reader on tiny idx fixtures written here (both layouts, raw and gzipped)."""

from __future__ import annotations

import gzip
import struct
from pathlib import Path

import numpy as np
import pytest
import torch

from llrnet.core.errors import InputError
from llrnet.data import two_class_mnist
from llrnet.data.mnist import FILES, mnist, read_idx
from llrnet.eval.suites import suite_dataset

LABELS = np.array([7, 1, 6, 6, 0, 7, 9, 6], dtype=np.uint8)


def idx_bytes(array: np.ndarray) -> bytes:
    """An idx file of a uint8 array: 0, 0, 0x08, ndim, big-endian sizes, data."""
    header = bytes([0, 0, 0x08, array.ndim]) + b"".join(struct.pack(">I", s) for s in array.shape)
    return header + array.astype(np.uint8).tobytes()


def images() -> np.ndarray:
    rng = np.random.default_rng(0)
    out = rng.integers(0, 256, size=(len(LABELS), 28, 28), dtype=np.uint8)
    out[:, 0, 0] = np.arange(len(LABELS))  # each image identifies its file position
    return out


def write_split(folder: Path, split: str = "test", gz: bool = False) -> None:
    folder.mkdir(parents=True, exist_ok=True)
    for name, array in zip(FILES[split], (images(), LABELS)):
        data = idx_bytes(array)
        if gz:
            (folder / f"{name}.gz").write_bytes(gzip.compress(data))
        else:
            (folder / name).write_bytes(data)


@pytest.mark.parametrize(("layout", "gz"), [("MNIST/raw", False), ("MNIST/raw", True),
                                             (".", False), (".", True)])
def test_both_layouts_read_the_same(tmp_path: Path, layout: str, gz: bool) -> None:
    write_split(tmp_path / layout, gz=gz)
    x, y = mnist(tmp_path, "test")
    assert x.dtype == np.uint8 and x.shape == (8, 28, 28)
    assert np.array_equal(x, images())
    assert y.dtype == np.int64 and y.tolist() == LABELS.tolist()


def test_two_class_mnist_keeps_6_and_7_in_file_order(tmp_path: Path) -> None:
    write_split(tmp_path)
    data = two_class_mnist(tmp_path, "test")
    # Positions 0 (7), 2 (6), 3 (6), 5 (7), 7 (6): 6 is class 0, 7 is class 1.
    assert data.labels.tolist() == [1, 0, 0, 1, 0]
    assert [round(float(v) * 255) for v in data.images[:, 0, 0, 0]] == [0, 2, 3, 5, 7]
    expected = torch.from_numpy(images()[[0, 2, 3, 5, 7]].astype(np.float32) / 255.0)
    torch.testing.assert_close(data.images[:, 0], expected, rtol=0, atol=1e-7)
    assert data.images.shape == (5, 1, 28, 28) and data.classes == (6, 7)


def test_the_eval_suite_reads_it(tmp_path: Path) -> None:
    write_split(tmp_path)
    assert len(suite_dataset("two_class_mnist", tmp_path)) == 5


def test_missing_mnist_names_the_fetch_command(tmp_path: Path) -> None:
    with pytest.raises(InputError, match=r"torchvision\.datasets\.MNIST\("):
        two_class_mnist(tmp_path, "test")
    with pytest.raises(InputError, match="does not download"):
        suite_dataset("two_class_mnist", tmp_path)


def test_bad_idx_files_are_input_errors(tmp_path: Path) -> None:
    bad = tmp_path / "bad"
    bad.write_bytes(b"\x01\x02\x03\x04")
    with pytest.raises(InputError, match="bad magic"):
        read_idx(bad)
    short = tmp_path / "short"
    short.write_bytes(idx_bytes(np.zeros((2, 3), dtype=np.uint8))[:-1])
    with pytest.raises(InputError, match="header says"):
        read_idx(short)
    write_split(tmp_path / "mixed")
    (tmp_path / "mixed" / FILES["test"][1]).write_bytes(idx_bytes(LABELS[:3]))
    with pytest.raises(InputError, match="expected 8 labels"):
        mnist(tmp_path / "mixed", "test")


def test_two_class_mnist_suite_has_the_kits_parameters() -> None:
    from llrnet.attacks import SPSA, Boundary, Chain
    from llrnet.attacks.validity import CheckedRandomSpatial, CheckedSpatialGrid
    from llrnet.eval import get_suite

    suite = get_suite("two_class_mnist")
    assert suite.names == ["clean", "spatial_grid", "spsa_with_random_spatial",
                           "boundary_with_random_spatial"]
    assert all(entry.max_images == 128 for entry in suite.entries) and not suite.shuffle
    grid = suite.entries[1].attack
    assert isinstance(grid, CheckedSpatialGrid)
    assert (grid.limits, grid.granularity, grid.border, grid.valid_check) == \
        ((10.0, 10.0, 10.0), (5, 5, 11), 4, "ink")
    for entry, second in zip(suite.entries[2:], (SPSA, Boundary)):
        chain = entry.attack
        assert isinstance(chain, Chain)
        first, stage = chain.stages
        assert isinstance(first, CheckedRandomSpatial) and first.border == 4
        assert first.limits == (10.0, 10.0, 10.0)
        assert isinstance(stage, second)
    spsa, boundary = suite.entries[2].attack.stages[1], suite.entries[3].attack.stages[1]
    assert (spsa.eps, spsa.steps, spsa.samples) == (0.3, 2000, 64)
    assert boundary.threshold == 4.0


def test_cli_scores_two_class_mnist_from_a_local_copy(
        tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    import json

    from llrnet.cli import main
    from llrnet.models import create_model, save_weights

    write_split(tmp_path / "mnist" / "MNIST" / "raw", gz=True)
    torch.manual_seed(0)
    weights = tmp_path / "w.safetensors"
    save_weights(create_model("digits_wrn", depth=10, width=1), weights)
    out = tmp_path / "out"
    assert main(["eval", "--suite", "two_class_mnist", "--data", str(tmp_path / "mnist"),
                 "--weights", str(weights), "--out", str(out), "--attacks",
                 "clean,spatial_grid", "--no-progress"]) == 0
    results = json.loads((out / "results.json").read_text())
    assert results["attacks"]["spatial_grid"]["images"] == 5
    assert results["attacks"]["spatial_grid"]["model_evaluations"] == 5 * 275
    capsys.readouterr()
    code = main(["eval", "--suite", "two_class_mnist", "--data", str(tmp_path / "none"),
                 "--weights", str(weights), "--out", str(tmp_path / "o2"), "--no-progress"])
    assert code == 2 and "torchvision.datasets.MNIST" in capsys.readouterr().err


def test_unreadable_or_malformed_mnist_files_are_named(tmp_path: Path) -> None:
    with pytest.raises(InputError, match=r"cannot read"):
        read_idx(tmp_path)  # a folder
    (tmp_path / "head").write_bytes(bytes([0, 0, 0x08, 3]) + b"\x00" * 5)
    with pytest.raises(InputError, match="truncated idx header"):
        read_idx(tmp_path / "head")
    with pytest.raises(InputError, match=r"MNIST split must be one of \['test', 'train'\], "
                                         r"got 'val'"):
        mnist(tmp_path, "val")  # type: ignore[arg-type]
    folder = tmp_path / "floats"
    write_split(folder)
    floats = np.zeros((8, 28, 28), dtype=">f4")
    header = bytes([0, 0, 0x0D, 3]) + b"".join(struct.pack(">I", n) for n in floats.shape)
    (folder / FILES["test"][0]).write_bytes(header + floats.tobytes())
    with pytest.raises(InputError,
                       match=r"expected uint8 images \[N, H, W\], got >f4 \[8, 28, 28\]"):
        mnist(folder, "test")
