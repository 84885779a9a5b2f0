"""Corrupt-file skipping, ImageNet folders, CIFAR-10 (binary) and loader settings."""

from __future__ import annotations

import hashlib
import tarfile
import threading
import warnings
from collections.abc import Iterator
from functools import partial
from http.server import SimpleHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image
from torch.utils.data import DataLoader

from llrnet.core.errors import InputError
from llrnet.data.folders import CIFAR10, cifar10, imagenet
from llrnet.data.loaders import available_cpus, loader_settings
from llrnet.data.robust import CorruptImageWarning, ImageFileDataset
from llrnet.data.transforms import cifar_train_transform


def write_images(folder: Path, n: int, size: tuple[int, int] = (40, 30)) -> list[Path]:
    folder.mkdir(parents=True, exist_ok=True)
    paths = []
    for i in range(n):
        path = folder / f"img{i:03d}.jpg"
        Image.new("RGB", size, (10 * i, 100, 200)).save(path)
        paths.append(path)
    return paths


def identity_tensor(image: Image.Image) -> torch.Tensor:
    return torch.tensor(image.getpixel((0, 0)), dtype=torch.float32)


def test_corrupt_files_are_skipped_counted_and_warned(tmp_path: Path) -> None:
    paths = write_images(tmp_path, 6)
    paths[1].write_bytes(paths[1].read_bytes()[:60])    # truncated JPEG
    paths[4].write_bytes(b"<html>not an image</html>")  # not an image
    dataset = ImageFileDataset([(p, i) for i, p in enumerate(paths)], identity_tensor)
    with pytest.warns(CorruptImageWarning, match=r"img001\.jpg"):
        _image, label = dataset[1]
    assert label == 2  # the next readable sample stands in
    assert dataset.skipped == 1

    # An epoch through a 2-worker DataLoader finishes with full batches, and
    # the skips counted in the workers are visible here.
    loader = DataLoader(dataset, batch_size=3, num_workers=2)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", CorruptImageWarning)
        labels = [int(y) for _, ys in loader for y in ys]
    assert labels == [0, 2, 2, 3, 5, 5]
    assert dataset.skipped == 3


def test_strict_lists_every_unreadable_file(tmp_path: Path) -> None:
    paths = write_images(tmp_path, 4)
    paths[0].write_bytes(b"")
    paths[3].write_bytes(b"garbage")
    with pytest.raises(InputError, match=r"2 unreadable image\(s\): .*img000\.jpg.*img003\.jpg"):
        ImageFileDataset([(p, 0) for p in paths], strict=True)


def test_imagenet_folder_labels_and_transforms(tmp_path: Path) -> None:
    write_images(tmp_path / "train" / "n02", 2, size=(300, 260))
    write_images(tmp_path / "train" / "n01", 3, size=(300, 260))
    write_images(tmp_path / "val" / "n01", 1, size=(300, 260))
    train = imagenet(tmp_path, "train", image_size=64)
    assert train.classes == ("n01", "n02") and train.targets == [0, 0, 0, 1, 1]
    image, label = train[4]
    assert image.shape == (3, 64, 64) and label == 1
    assert float(image.min()) >= 0.0 and float(image.max()) <= 1.0
    val = imagenet(tmp_path, "val")
    image, _ = val[0]
    assert image.shape == (3, 224, 224)
    # Validation is deterministic; training augmentation is random.
    noise = (np.random.default_rng(0).random((260, 300, 3)) * 255).astype(np.uint8)
    Image.fromarray(noise).save(tmp_path / "train" / "n01" / "img000.jpg")
    Image.fromarray(noise).save(tmp_path / "val" / "n01" / "img000.jpg")
    assert torch.equal(val[0][0], val[0][0])
    draws = [train[0][0] for _ in range(4)]
    assert any(not torch.equal(draws[0], d) for d in draws[1:])


def cifar_records(n: int, seed: int) -> tuple[bytes, np.ndarray, np.ndarray]:
    rng = np.random.default_rng(seed)
    labels = rng.integers(0, 10, n).astype(np.uint8)
    pixels = rng.integers(0, 256, (n, 3, 32, 32)).astype(np.uint8)
    raw = b"".join(bytes([int(y)]) + p.tobytes() for y, p in zip(labels, pixels))
    return raw, labels, pixels


def write_cifar(folder: Path) -> dict[str, tuple[np.ndarray, np.ndarray]]:
    folder.mkdir(parents=True)
    truth: dict[str, list[tuple[np.ndarray, np.ndarray]]] = {"train": [], "test": []}
    for i, name in enumerate([f"data_batch_{k}.bin" for k in range(1, 6)] + ["test_batch.bin"]):
        raw, labels, pixels = cifar_records(3, seed=i)
        (folder / name).write_bytes(raw)
        truth["test" if name.startswith("test") else "train"].append((labels, pixels))
    return {s: (np.concatenate([t[0] for t in v]), np.concatenate([t[1] for t in v]))
            for s, v in truth.items()}


def test_cifar10_binary_records_and_augmentation(tmp_path: Path) -> None:
    truth = write_cifar(tmp_path / "cifar-10-batches-bin")
    test = CIFAR10(tmp_path, "test")
    assert len(test) == 3 and test.transform is None
    image, label = test[2]
    assert label == int(truth["test"][0][2])
    torch.testing.assert_close(image, torch.from_numpy(truth["test"][1][2]).float() / 255)
    train = cifar10(tmp_path, "train")
    assert len(train) == 15 and train.transform is not None
    assert train.targets.tolist() == truth["train"][0].tolist()
    plain = CIFAR10(tmp_path, "train", augment=False)
    torch.testing.assert_close(plain[14][0], torch.from_numpy(truth["train"][1][14]).float() / 255)


def test_cifar_augmentation_is_flip_reflect_pad_crop() -> None:
    image = torch.rand(3, 32, 32)
    padded = torch.nn.functional.pad(image[None], (4, 4, 4, 4), mode="reflect")[0]
    augment = cifar_train_transform()
    for _ in range(20):
        out = augment(image)
        assert out.shape == (3, 32, 32)
        # Every output is a 32x32 window of the reflect-padded image, maybe flipped.
        found = any(
            torch.equal(out, window) or torch.equal(out.flip(-1), window)
            for dy in range(9) for dx in range(9)
            for window in [padded[:, dy:dy + 32, dx:dx + 32]]
        )
        assert found


@pytest.fixture
def file_server(tmp_path: Path) -> Iterator[tuple[str, Path]]:
    served = tmp_path / "served"
    served.mkdir()
    handler = partial(SimpleHTTPRequestHandler, directory=str(served))
    handler.log_message = lambda *a, **k: None  # type: ignore[attr-defined]
    server = ThreadingHTTPServer(("127.0.0.1", 0), handler)
    thread = threading.Thread(target=server.serve_forever, kwargs={"poll_interval": 0.05},
                              daemon=True)
    thread.start()
    yield f"http://127.0.0.1:{server.server_address[1]}", served
    server.shutdown()
    server.server_close()


def test_cifar10_download_from_local_server(file_server: tuple[str, Path], tmp_path: Path) -> None:
    url, served = file_server
    truth = write_cifar(tmp_path / "src" / "cifar-10-batches-bin")
    archive = served / "cifar-10-binary.tar.gz"
    with tarfile.open(archive, "w:gz") as tar:
        tar.add(tmp_path / "src" / "cifar-10-batches-bin", arcname="cifar-10-batches-bin")
    md5 = hashlib.md5(archive.read_bytes()).hexdigest()
    root = tmp_path / "cifar"
    data = CIFAR10(root, "test", download=True, url=f"{url}/cifar-10-binary.tar.gz", md5=md5)
    assert [data[i][1] for i in range(3)] == truth["test"][0].tolist()
    # A wrong checksum is refused.
    with pytest.raises(InputError, match="could not download CIFAR-10"):
        CIFAR10(tmp_path / "other", "test", download=True,
                url=f"{url}/cifar-10-binary.tar.gz", md5="0" * 32)


def test_loader_settings_per_device() -> None:
    cpu = loader_settings("cpu")
    assert cpu["num_workers"] == available_cpus() and cpu["pin_memory"] is False
    if cpu["num_workers"] > 0:
        assert cpu["persistent_workers"] is True and cpu["prefetch_factor"] == 2
    cuda = loader_settings(torch.device("cuda", 0), workers=2)
    assert cuda == {**cuda, "num_workers": 2, "pin_memory": True, "persistent_workers": True}
    assert loader_settings("cpu", workers=0) == {"num_workers": 0, "pin_memory": False}


def test_loader_settings_work_with_a_dataloader(tmp_path: Path) -> None:
    paths = write_images(tmp_path, 4, size=(8, 8))
    dataset = ImageFileDataset([(p, i) for i, p in enumerate(paths)], identity_tensor)
    loader = DataLoader(dataset, batch_size=2, **loader_settings("cpu", workers=1))
    assert [int(y) for _ in range(2) for _, ys in loader for y in ys] == [0, 1, 2, 3] * 2

