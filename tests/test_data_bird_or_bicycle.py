"""BirdOrBicycle dataset, verify, image processing and the evaluation loader."""

from __future__ import annotations

import io
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image

from llrnet.cli import main
from llrnet.data.bird_or_bicycle import BirdOrBicycle, evaluation_loader, verify
from llrnet.data.bird_or_bicycle.process import process_image_bytes, resize_and_crop

COLORS = {"bicycle": (200, 30, 30), "bird": (30, 30, 200)}


def make_split(root: Path, split: str, per_class: int, size: int = 299) -> dict[str, list[str]]:
    ids: dict[str, list[str]] = {}
    for class_name, color in COLORS.items():
        folder = root / "0.0.4" / split / class_name
        folder.mkdir(parents=True)
        ids[class_name] = [f"{class_name[:2]}{i:014x}" for i in range(per_class)]
        for image_id in ids[class_name]:
            Image.new("RGB", (size, size), color).save(folder / f"{image_id}.jpg")
    return ids


def test_labels_ids_and_default_transform(tmp_path: Path) -> None:
    ids = make_split(tmp_path, "test", 3)
    data = BirdOrBicycle(tmp_path, "test")
    assert data.classes == ("bicycle", "bird")
    assert len(data) == 6
    assert data.ids == sorted(ids["bicycle"]) + sorted(ids["bird"])
    assert data.targets == [0, 0, 0, 1, 1, 1]
    for index in (0, 5):
        image, label = data[index]
        assert image.dtype == torch.float32 and image.shape == (3, 224, 224)
        assert float(image.min()) >= 0.0 and float(image.max()) <= 1.0
        # bicycle (label 0) images are red, bird (label 1) images blue.
        red, blue = float(image[0].mean()), float(image[2].mean())
        assert (red > blue) == (label == 0)
    # The root may also be given as the version folder itself.
    assert BirdOrBicycle(tmp_path / "0.0.4", "test").ids == data.ids


def test_default_transform_matches_pil_bilinear_resize(tmp_path: Path) -> None:
    folder = tmp_path / "0.0.4" / "test"
    rng = np.random.default_rng(0)
    pixels = (rng.random((299, 299, 3)) * 255).astype(np.uint8)
    for class_name in COLORS:
        (folder / class_name).mkdir(parents=True)
    Image.fromarray(pixels).save(folder / "bird" / "0000000000000001.jpg")
    image, label = BirdOrBicycle(tmp_path, "test")[0]
    assert label == 1
    with Image.open(folder / "bird" / "0000000000000001.jpg") as decoded:
        expected = np.asarray(decoded.convert("RGB").resize((224, 224), Image.Resampling.BILINEAR))
    reference = torch.from_numpy(expected.astype(np.float32) / 255).permute(2, 0, 1)
    # torchvision's antialiased bilinear and PIL's agree to within a few levels.
    assert float((image - reference).abs().mean()) < 2 / 255


def test_custom_transform_receives_pil_image(tmp_path: Path) -> None:
    make_split(tmp_path, "train", 1)
    sizes = [BirdOrBicycle(tmp_path, "train", transform=lambda im: im.size)[i][0]
             for i in range(2)]
    assert sizes == [(299, 299), (299, 299)]


def test_evaluation_loader_order_is_seeded(tmp_path: Path) -> None:
    make_split(tmp_path, "test", 4, size=16)
    # Each sample's identity: its position in the dataset (via the id).
    data = BirdOrBicycle(tmp_path, "test", transform=lambda im: torch.zeros(1))
    data.samples = [(p, i) for i, (p, _) in enumerate(data.samples)]

    def order(seed: int | None) -> list[int]:
        return [int(i) for _, y in evaluation_loader(data, batch_size=3, seed=seed) for i in y]

    orders = {seed: order(seed) for seed in (None, 1, 2, 3)}
    assert orders[None] == list(range(8))
    assert order(1) == orders[1]
    assert all(sorted(o) == list(range(8)) for o in orders.values())
    assert len({tuple(o) for o in orders.values()}) == 4


def test_resize_and_crop_shorter_side_and_center() -> None:
    # 600x400 landscape: scaled to 449x299, center 299 columns kept.
    image = Image.new("RGB", (600, 400), (0, 255, 0))
    image.paste((255, 0, 0), (0, 0, 80, 400))     # left band: cropped away
    image.paste((0, 0, 255), (520, 0, 600, 400))  # right band: cropped away
    out = np.asarray(resize_and_crop(image))
    assert out.shape == (299, 299, 3)
    assert out[:, :, 1].min() >= 250 and out[:, :, [0, 2]].max() <= 5
    portrait = resize_and_crop(Image.new("RGB", (100, 301), (9, 9, 9)))
    assert portrait.size == (299, 299)


def test_process_image_bytes_grayscale_and_quality() -> None:
    source = io.BytesIO()
    Image.new("L", (320, 640), 128).save(source, format="PNG")
    stored = process_image_bytes(source.getvalue())
    with Image.open(io.BytesIO(stored)) as image:
        assert image.format == "JPEG" and image.mode == "RGB" and image.size == (299, 299)
    # Pillow's default JPEG quality (75) gives exactly the bytes of an explicit 75.
    with Image.open(io.BytesIO(source.getvalue())) as image:
        explicit = io.BytesIO()
        resize_and_crop(image.convert("RGB")).save(explicit, format="JPEG", quality=75)
    assert stored == explicit.getvalue()


def test_verify_counts_sizes_and_decodability(tmp_path: Path,
                                              capsys: pytest.CaptureFixture[str]) -> None:
    make_split(tmp_path, "test", 125, size=299)
    assert verify(tmp_path, "test").ok
    assert main(["data", "verify", "--root", str(tmp_path), "--split", "test"]) == 0
    assert "dataset ok" in capsys.readouterr().out

    bird = tmp_path / "0.0.4" / "test" / "bird"
    files = sorted(bird.glob("*.jpg"))
    Image.new("RGB", (300, 299)).save(files[0], format="JPEG")        # wrong size
    files[1].write_bytes(files[1].read_bytes()[:200])                 # truncated
    files[2].unlink()                                                 # missing
    report = verify(tmp_path, "test")
    problems = dict(report.problems)
    assert report.counts["test"] == {"bicycle": 125, "bird": 124}
    assert problems[str(bird)] == "124 images, expected 125"
    assert problems[str(files[0])] == "size 300x299, expected 299x299"
    assert problems[str(files[1])].startswith("not decodable")
    assert len(report.problems) == 3
    assert main(["data", "verify", "--root", str(tmp_path), "--split", "test"]) == 1
    captured = capsys.readouterr()
    assert "test/bird: 124 of 125 images  WRONG" in captured.out
    assert str(files[0]) in captured.err and "3 problem(s)" in captured.err


@pytest.mark.parametrize("size", [(1, 1), (299, 299), (300, 299), (1000, 10), (10, 1000),
                                  (641, 427), (427, 641)])
def test_resize_and_crop_always_gives_299_square(size: tuple[int, int]) -> None:
    out = resize_and_crop(Image.new("RGB", size, (1, 2, 3)))
    assert out.size == (299, 299)
